package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkFileStorePut measures acknowledged (fsynced) writes of 2 KB
// cards with 1, 8 and 64 concurrent writers; group commit is what lets the
// many-writer figure grow.
func BenchmarkFileStorePut(b *testing.B) {
	card := card2K(0)
	for _, writers := range []int{1, 8, 64} {
		b.Run("writers="+strconv.Itoa(writers), func(b *testing.B) {
			s, err := openFileStore(filepath.Join(b.TempDir(), "cards.db"), false, 0, slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			var next atomic.Int64
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
						id := "om_" + strconv.Itoa(w) + "_" + strconv.FormatInt(i, 10)
						if err := s.Update(id, func(cur *Record) *Record { return cur.withCard(card, nil, nil, now) }); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
		})
	}
}

// BenchmarkFileStoreReplay measures start-up on a data file of 2 KB cards
// (1,000,000 unless CARDCALLBACK_BENCH_CARDS says otherwise; the file takes
// about 2.1 GB of the temporary folder): the time to open it, and the
// memory the store then holds against the raw card bytes (heap/raw, and
// rss/raw from the process's resident set, peak included).
func BenchmarkFileStoreReplay(b *testing.B) {
	n := benchCards(1_000_000)
	path := filepath.Join(b.TempDir(), "cards.db")
	raw := writeCards(b, path, n)
	b.ReportAllocs()
	for b.Loop() {
		debug.FreeOSMemory()
		rss0, _ := procStatus("VmRSS")
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		start := time.Now()
		s, err := openFileStore(path, false, 0, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		if s.Len() != n {
			b.Fatalf("replayed %d records, want %d", s.Len(), n)
		}
		runtime.GC()
		var m1 runtime.MemStats
		runtime.ReadMemStats(&m1)
		rss1, _ := procStatus("VmRSS")
		peak, _ := procStatus("VmHWM")
		b.ReportMetric(elapsed.Seconds(), "s/replay")
		b.ReportMetric(float64(m1.HeapInuse-m0.HeapInuse)/float64(raw), "heap/raw")
		b.ReportMetric(float64(rss1-rss0)/float64(raw), "rss/raw")
		b.ReportMetric(float64(peak-rss0)/float64(raw), "peakrss/raw")
		s.Close()
	}
}

// benchCards is how many cards a benchmark stores: CARDCALLBACK_BENCH_CARDS,
// else n.
func benchCards(n int) int {
	if v, err := strconv.Atoi(os.Getenv("CARDCALLBACK_BENCH_CARDS")); err == nil {
		return v
	}
	return n
}

// writeCards writes n cards as a data file directly and returns the raw
// card bytes.
func writeCards(b *testing.B, path string, n int) int64 {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.Write(fileMagic)
	var raw int64
	var frame []byte
	now := time.Now()
	for i := range n {
		rec := &Record{Card: card2K(i), Updated: now}
		raw += int64(len(rec.Card))
		frame = appendFrame(frame[:0], "om_"+strconv.Itoa(i), rec)
		w.Write(frame)
	}
	if err := w.Flush(); err != nil {
		b.Fatal(err)
	}
	f.Close()
	return raw
}

// procStatus reads a kB figure of /proc/self/status, in bytes.
func procStatus(field string) (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/self/status", field)
}

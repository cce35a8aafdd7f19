package main

import (
	"bytes"
	"encoding/json"
	"expvar"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// metrics are the server's counters, kept without dependencies and served
// two ways: in the Prometheus text format at /metrics and in expvar's JSON
// at /debug/vars.
type metrics struct {
	callbacks    counterVec // by generation and outcome
	logic        *histogram // business logic duration
	answer       *histogram // callback answer latency
	pushes       counterVec // delayed updates by result
	tokens       counterVec // tenant_access_token fetches by result
	fsync        *histogram // durable store fdatasync latency
	storedRecord func() int // records in the store
	connTimeouts counterVec // connections closed for a time limit, by phase
	openConns    func() int // connections open
	handoffs     counterVec // connections the fast path handed to net/http, by reason
}

// Buckets in seconds. The answer's make the platform's 3 s deadline and
// the 2.5 s budget visible; the logic's reach the 10 minute timeout.
var (
	answerBuckets = []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 3, 5}
	logicBuckets  = []float64{0.01, 0.1, 0.5, 1, 2, 2.5, 3, 5, 10, 30, 60, 300, 600}
	fsyncBuckets  = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1}
)

func newMetrics() *metrics {
	return &metrics{
		callbacks:    counterVec{labels: []string{"generation", "outcome"}},
		logic:        newHistogram(logicBuckets),
		answer:       newHistogram(answerBuckets),
		pushes:       counterVec{labels: []string{"result"}},
		tokens:       counterVec{labels: []string{"result"}},
		fsync:        newHistogram(fsyncBuckets),
		storedRecord: func() int { return 0 },
		connTimeouts: counterVec{labels: []string{"phase"}},
		openConns:    func() int { return 0 },
		handoffs:     counterVec{labels: []string{"reason"}},
	}
}

// counterVec is a set of counters told apart by up to two label values.
// Counting takes a read lock and allocates nothing once a combination
// has been seen: it runs on every callback.
type counterVec struct {
	labels []string
	mu     sync.RWMutex
	m      map[labelValues]*atomic.Uint64
}

type labelValues [2]string

func (v *counterVec) inc(values ...string) {
	var key labelValues
	copy(key[:], values)
	v.mu.RLock()
	c := v.m[key]
	v.mu.RUnlock()
	if c == nil {
		v.mu.Lock()
		if c = v.m[key]; c == nil {
			if v.m == nil {
				v.m = make(map[labelValues]*atomic.Uint64)
			}
			c = new(atomic.Uint64)
			v.m[key] = c
		}
		v.mu.Unlock()
	}
	c.Add(1)
}

// snapshot returns the label values and counts, in a stable order.
func (v *counterVec) snapshot() (keys [][]string, counts []uint64) {
	v.mu.RLock()
	all := make([]labelValues, 0, len(v.m))
	for k := range v.m {
		all = append(all, k)
	}
	v.mu.RUnlock()
	sort.Slice(all, func(i, j int) bool {
		return all[i][0] < all[j][0] || all[i][0] == all[j][0] && all[i][1] < all[j][1]
	})
	for _, k := range all {
		v.mu.RLock()
		n := v.m[k].Load()
		v.mu.RUnlock()
		keys = append(keys, append([]string(nil), k[:len(v.labels)]...))
		counts = append(counts, n)
	}
	return keys, counts
}

// histogram counts observations into cumulative buckets.
type histogram struct {
	bounds []float64
	counts []atomic.Uint64 // one per bound, then +Inf
	sumNS  atomic.Int64
}

func newHistogram(bounds []float64) *histogram {
	return &histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i, _ := slices.BinarySearch(h.bounds, s)
	h.counts[i].Add(1)
	h.sumNS.Add(int64(d))
}

// cumulative returns the count at or below each bound, then the total.
func (h *histogram) cumulative() []uint64 {
	out := make([]uint64, len(h.counts))
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
		out[i] = n
	}
	return out
}

// writeProm writes every metric in the Prometheus text exposition format.
func (m *metrics) writeProm(w *bytes.Buffer) {
	counters := func(name, help string, v *counterVec) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
		keys, counts := v.snapshot()
		for i, vals := range keys {
			w.WriteString(name)
			w.WriteByte('{')
			for j, l := range v.labels {
				if j > 0 {
					w.WriteByte(',')
				}
				fmt.Fprintf(w, "%s=%s", l, strconv.Quote(vals[j]))
			}
			fmt.Fprintf(w, "} %d\n", counts[i])
		}
	}
	hist := func(name, help string, h *histogram) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
		cum := h.cumulative()
		for i, b := range h.bounds {
			fmt.Fprintf(w, "%s_bucket{le=\"%s\"} %d\n", name, strconv.FormatFloat(b, 'g', -1, 64), cum[i])
		}
		fmt.Fprintf(w, "%s_bucket{le=\"+Inf\"} %d\n", name, cum[len(cum)-1])
		fmt.Fprintf(w, "%s_sum %s\n", name, strconv.FormatFloat(float64(h.sumNS.Load())/1e9, 'g', -1, 64))
		fmt.Fprintf(w, "%s_count %d\n", name, cum[len(cum)-1])
	}
	counters("cardcallback_callbacks_total", "Callbacks answered, by generation and outcome.", &m.callbacks)
	hist("cardcallback_callback_answer_seconds", "Time from a callback's arrival to its answer; the platform gives up at 3 s.", m.answer)
	hist("cardcallback_logic_duration_seconds", "Duration of the business logic of a click.", m.logic)
	counters("cardcallback_delayed_updates_total", "Final cards pushed through the delayed-update API, by result.", &m.pushes)
	counters("cardcallback_tenant_token_refreshes_total", "tenant_access_token fetches, by result.", &m.tokens)
	fmt.Fprintf(w, "# HELP cardcallback_stored_cards Records (cards and click states) in the store.\n# TYPE cardcallback_stored_cards gauge\ncardcallback_stored_cards %d\n", m.storedRecord())
	hist("cardcallback_store_fsync_seconds", "Latency of the durable store's fdatasync (group commit).", m.fsync)
	fmt.Fprintf(w, "# HELP cardcallback_open_connections Client connections open.\n# TYPE cardcallback_open_connections gauge\ncardcallback_open_connections %d\n", m.openConns())
	counters("cardcallback_connection_timeouts_total", "Connections closed for a time limit, by phase: header, active or idle.", &m.connTimeouts)
	counters("cardcallback_fast_path_handoffs_total", "Connections the fast path handed to net/http at a request that is not a plain callback, by reason: route, header or size.", &m.handoffs)
}

// vars is the expvar view of the same counters.
func (m *metrics) vars() any {
	counters := func(v *counterVec) map[string]uint64 {
		out := map[string]uint64{}
		keys, counts := v.snapshot()
		for i, vals := range keys {
			out[strings.Join(vals, "/")] = counts[i]
		}
		return out
	}
	hist := func(h *histogram) map[string]any {
		cum := h.cumulative()
		buckets := map[string]uint64{}
		for i, b := range h.bounds {
			buckets[strconv.FormatFloat(b, 'g', -1, 64)] = cum[i]
		}
		buckets["+Inf"] = cum[len(cum)-1]
		return map[string]any{"count": cum[len(cum)-1], "sum_seconds": float64(h.sumNS.Load()) / 1e9, "buckets": buckets}
	}
	return map[string]any{
		"callbacks":              counters(&m.callbacks),
		"callback_answer":        hist(m.answer),
		"logic_duration":         hist(m.logic),
		"delayed_updates":        counters(&m.pushes),
		"tenant_token_refreshes": counters(&m.tokens),
		"stored_cards":           m.storedRecord(),
		"store_fsync":            hist(m.fsync),
		"open_connections":       m.openConns(),
		"connection_timeouts":    counters(&m.connTimeouts),
		"fast_path_handoffs":     counters(&m.handoffs),
	}
}

func handleMetrics(m *metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		m.writeProm(&buf)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(buf.Bytes())
	})
}

// handleVars serves expvar's JSON: the standard cmdline and memstats, and
// this server's counters under "cardcallback". The counters are not
// published in expvar's global registry, so several servers (the tests
// run many) can live in one process.
func handleVars(m *metrics) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf bytes.Buffer
		buf.WriteByte('{')
		first := true
		expvar.Do(func(kv expvar.KeyValue) {
			if !first {
				buf.WriteByte(',')
			}
			first = false
			fmt.Fprintf(&buf, "%q:%s", kv.Key, kv.Value)
		})
		own, _ := json.Marshal(m.vars())
		if !first {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, "%q:%s}", "cardcallback", own)
		writeJSON(w, http.StatusOK, buf.Bytes())
	})
}

package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"
)

// The durable store is an append-only log of records in one file.
//
//	file   = magic frame*
//	frame  = length:u32le crc32c(payload):u32le payload
//	payload = op:u8 idlen:uvarint id [record | state]  (op 1 put, 2 delete, 3 state)
//	record = updated:varint cardlen+1:uvarint card
//	         nallow:uvarint (len:uvarint bytes)* clicks
//	state  = updated:varint clicks
//	clicks = nclicks:uvarint (buttontype buttonid status:u8 reason operator started:varint finished:varint)*
//
// A state frame changes only the click states of a record and keeps its
// card and allow list: a click that starts running writes no copy of its
// card. Format 1 files, which have no state frames, are read as they are
// and marked format 2 before anything is appended to them, so that an
// older build refuses them instead of taking a state frame for damage.
//
// A write is acknowledged once its frame is on disk (fdatasync); writers
// that arrive while a sync runs share the next one (group commit). The
// file is kept ahead of the log by zeros written in advance (preallocStep):
// a frame written over blocks the file already has is synced without a
// change to the file's size or its blocks, which spares each sync a
// commit of the file system's journal. The zeros past the last frame are
// free space, at open as after a crash; a clean close cuts them off. On open
// the log is replayed into memory; reads never touch the disk. When the
// log's dead bytes outnumber its live ones the log is rewritten with only
// live records and renamed into place.

var (
	fileMagic   = []byte("CARDCB\x00\x02")
	fileMagicV1 = []byte("CARDCB\x00\x01")
)

const (
	opPut    = 1
	opDelete = 2
	opState  = 3
	// maxFrame bounds a frame's payload: a 1 MiB card plus its state.
	maxFrame = 8 << 20
	// minCompact is the fewest dead bytes worth a compaction.
	minCompact = 1 << 20
	// recordFraming is about what a record's frame adds to its id, card
	// and meta chunk (table.go): the frame header, the op and two lengths.
	recordFraming = 12
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errDamaged is wrapped by the error a damaged log gives at open.
var (
	errDamaged = errors.New("data file is damaged")
	errNotOurs = errors.New("it does not start with the cardcallback header")
)

// fileStore is the durable Store.
type fileStore struct {
	path      string
	log       *slog.Logger
	retention time.Duration
	now       func() time.Time
	lock      *os.File // path+".lock", locked for the life of the store
	// onSync observes each fdatasync's latency (metrics); may be nil.
	onSync func(time.Duration)
	// hook, when set by a test, is called at each step of a compaction;
	// an error stops it there, leaving the files as a crash would.
	hook func(step string) error

	mu      sync.RWMutex
	recs    *table
	pending []byte // frames not yet written
	spare   []byte
	cur     *batch // the batch pending belongs to
	// logBytes is the size of the log's frames, pending included.
	logBytes int64
	broken   error // a failed write or sync: the log's tail is unknown
	closed   bool

	kick chan struct{}
	stop chan struct{}
	wg   sync.WaitGroup

	fileMu     sync.Mutex // the log file and the compaction tail
	f          *os.File
	off        int64  // where the log's frames end in f, and the next are written
	size       int64  // f's size: zeros from off on
	tail       []byte // frames written while a compaction copies; nil otherwise
	compacting bool   // guarded by mu
}

// batch is one group commit: its writers wait for done, then read err.
type batch struct {
	done chan struct{}
	err  error
}

func newBatch() *batch { return &batch{done: make(chan struct{})} }

// openFileStore locks, replays and opens the log at path. A torn frame at
// the end (a crash mid-write) is cut off with a warning; damage before it
// is an error naming the offset unless repair is set, which keeps the
// longest valid prefix and moves the damaged file aside.
func openFileStore(path string, repair bool, retention time.Duration, log *slog.Logger) (*fileStore, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another cardcallback process (one process per data file)", path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	s := &fileStore{
		path: path, log: log, retention: retention, now: time.Now, lock: lock,
		recs: newTable(), cur: newBatch(),
		kick: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	if err := s.load(repair); err != nil {
		lock.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.syncLoop()
	if err := s.failRunning(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// load replays the log into memory and leaves s.f open for appending.
func (s *fileStore) load(repair bool) error {
	os.Remove(s.path + ".tmp") // a compaction that did not finish
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	size := fi.Size()
	end, v1, damage := replay(f, size, s.recs)
	switch {
	case errors.Is(damage, errNotOurs):
		f.Close()
		return fmt.Errorf("%s is not a cardcallback data file (%v); refusing to touch it", s.path, damage)
	case damage != nil && zeros(f, end, size):
		// Space written ahead of the log (preallocStep), or zeros a file
		// system left after a crash: nothing was lost, and the log goes
		// on over them.
	case damage != nil && !isTornTail(f, end, size):
		if !repair {
			f.Close()
			return fmt.Errorf("%w: %s at offset %d: %v; the %d records before it are intact: start with -repair to keep them and move the damaged file aside",
				errDamaged, s.path, end, damage, s.recs.len())
		}
		f.Close()
		if f, err = s.repairTo(end); err != nil {
			return err
		}
		size = end
		s.log.Warn("data file repaired: kept the valid prefix, moved the damaged file aside",
			"path", s.path, "offset", end, "records", s.recs.len(), "aside", s.path+".damaged")
	case end < size:
		s.log.Warn("cutting off a torn write at the end of the data file (a crash mid-write; it was never acknowledged)",
			"path", s.path, "offset", end, "bytes", size-end)
		size = end
		err := f.Truncate(end)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return fmt.Errorf("truncate the torn tail of %s: %w", s.path, err)
		}
	}
	if end == 0 || v1 {
		if _, err := f.WriteAt(fileMagic, 0); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := syncDir(s.path); err != nil {
			f.Close()
			return err
		}
		if v1 {
			s.log.Info("data file marked format 2; builds before it cannot read it", "path", s.path)
		}
		end = max(end, int64(len(fileMagic)))
	}
	s.f, s.off, s.size, s.logBytes = f, end, max(size, end), end-int64(len(fileMagic))
	return nil
}

// repairTo moves the damaged file aside and writes its first end bytes
// back as the log.
func (s *fileStore) repairTo(end int64) (*os.File, error) {
	aside := s.path + ".damaged"
	if err := os.Rename(s.path, aside); err != nil {
		return nil, err
	}
	src, err := os.Open(aside)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	if _, err = io.CopyN(f, src, end); err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = syncDir(s.path)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// replay applies every valid frame of f to recs. It returns the offset
// where the valid log ends and what stopped it before size, if anything.
func replay(f *os.File, size int64, recs *table) (end int64, v1 bool, damage error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<20)
	head := make([]byte, len(fileMagic))
	n, _ := io.ReadFull(r, head)
	v1 = string(head) == string(fileMagicV1)
	if !v1 && string(head) != string(fileMagic) {
		if size == 0 || (n < len(fileMagic) && string(head[:n]) == string(fileMagic[:n])) {
			return 0, false, nil // new, or created by a crash before its header
		}
		return 0, false, errNotOurs
	}
	end = int64(len(fileMagic))
	var hdr [8]byte
	var payload []byte
	for end < size {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return end, v1, errors.New("incomplete frame header")
		}
		n := binary.LittleEndian.Uint32(hdr[0:4])
		if n == 0 || n > maxFrame {
			return end, v1, fmt.Errorf("impossible frame length %d", n)
		}
		if int64(n) > size-end-8 {
			return end, v1, errors.New("frame runs past the end of the file")
		}
		if cap(payload) < int(n) {
			payload = make([]byte, n)
		}
		payload = payload[:n]
		if _, err := io.ReadFull(r, payload); err != nil {
			return end, v1, err
		}
		if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(hdr[4:8]) {
			return end, v1, errors.New("checksum mismatch")
		}
		if err := applyFrame(payload, recs); err != nil {
			return end, v1, err
		}
		end += 8 + int64(n)
	}
	return end, v1, nil
}

// isTornTail reports whether the invalid bytes from end to size can be a
// write cut short by a crash: one frame that runs to (or past) the end of
// the file or into the zeros written ahead of the log.
func isTornTail(f *os.File, end, size int64) bool {
	var hdr [8]byte
	n, _ := f.ReadAt(hdr[:], end)
	if n < 8 {
		return true
	}
	l := int64(binary.LittleEndian.Uint32(hdr[0:4]))
	return l > 0 && l <= maxFrame && (end+8+l >= size || zeros(f, end+8+l, size))
}

// zeros reports whether f holds only zeros from off to size.
func zeros(f *os.File, off, size int64) bool {
	buf := make([]byte, 64<<10)
	for off < size {
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		for _, b := range buf[:n] {
			if b != 0 {
				return false
			}
		}
		off += int64(n)
		if err != nil {
			return off >= size
		}
	}
	return true
}

func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// observeSync sets a function told each fdatasync's latency.
func (s *fileStore) observeSync(fn func(time.Duration)) {
	s.fileMu.Lock()
	s.onSync = fn
	s.fileMu.Unlock()
}

// failRunning marks clicks left running by a crash as failed, so they can
// be retried.
func (s *fileStore) failRunning() error {
	s.mu.RLock()
	ids := s.recs.ids(func(r *slot) bool { return r.running })
	s.mu.RUnlock()
	for _, id := range ids {
		err := s.Update(id, func(cur *Record) *Record {
			n := cur
			for _, c := range cur.Clicks {
				if c.Status == StatusRunning {
					c.Status, c.Reason, c.Finished = StatusFailed, "interrupted by restart", s.now()
					n = n.withClick(c, nil, n.Updated)
				}
			}
			return n
		})
		if err != nil {
			return err
		}
		s.log.Warn("a click was running when the server stopped; marked failed so it can be retried", "message_id", id)
	}
	return nil
}

func (s *fileStore) Get(id string) (*Record, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.recs.get(id)
	return r, r != nil
}

func (s *fileStore) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.recs.len()
}

func (s *fileStore) Update(id string, fn func(*Record) *Record) error {
	b, err := s.apply(id, fn, true)
	if err != nil || b == nil {
		return err
	}
	<-b.done
	return b.err
}

func (s *fileStore) UpdateNoWait(id string, fn func(*Record) *Record) error {
	_, err := s.apply(id, fn, false)
	return err
}

// apply changes the record in memory and queues its frame; the returned
// batch ends once the frame is on disk (nil when nothing changed). Only a
// write that waits starts a sync: one that does not rides along with the
// next.
func (s *fileStore) apply(id string, fn func(*Record) *Record, sync bool) (*batch, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errStoreClosed
	}
	if s.broken != nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("the data file failed a write and takes no more until restart: %w", s.broken)
	}
	cur, r := s.recs.update(id, fn)
	if r == nil && cur == nil {
		s.mu.Unlock()
		return nil, nil
	}
	n := len(s.pending)
	if cur != nil && r != nil && bytes.Equal(cur.Card, r.Card) && slices.Equal(cur.Allow, r.Allow) {
		s.pending = appendStateFrame(s.pending, id, r)
	} else {
		s.pending = appendFrame(s.pending, id, r)
	}
	s.logBytes += int64(len(s.pending) - n)
	b := s.cur
	s.mu.Unlock()
	if sync {
		select {
		case s.kick <- struct{}{}:
		default:
		}
	}
	return b, nil
}

// syncLoop writes and syncs pending frames, one batch at a time.
func (s *fileStore) syncLoop() {
	defer s.wg.Done()
	// With a retention, old records are dropped by a compaction even when
	// nothing is written; check for them now and then.
	var expiry <-chan time.Time
	if s.retention > 0 {
		t := time.NewTicker(min(max(s.retention/4, time.Minute), time.Hour))
		defer t.Stop()
		expiry = t.C
	}
	for {
		select {
		case <-s.kick:
			s.flush()
		case <-expiry:
			if s.startCompaction(s.hasExpired) {
				s.runCompaction()
			}
		case <-s.stop:
			s.flush()
			return
		}
	}
}

// hasExpired reports whether a record is past the retention. Called with
// s.mu held.
func (s *fileStore) hasExpired() bool {
	return len(s.recs.ids(s.expired(s.now().Add(-s.retention)))) > 0
}

// expired matches the records last updated before cutoff, unless a click
// of theirs is running.
func (s *fileStore) expired(cutoff time.Time) func(*slot) bool {
	c := unixNano(cutoff)
	return func(r *slot) bool { return r.updated < c && !r.running }
}

// tooManyDead reports whether the log's dead bytes (frames a later one
// replaced) outnumber its live ones, and are worth a rewrite. Counting
// frames instead would rewrite every card for a run of small click-state
// frames, and did, in the middle of a burst of first clicks. Called with
// s.mu held.
func (s *fileStore) tooManyDead() bool {
	live := s.liveBytes()
	return s.logBytes-live > max(live, minCompact)
}

// liveBytes is about the size of the log once compacted: a frame for
// each record. Called with s.mu held.
func (s *fileStore) liveBytes() int64 {
	return int64(s.recs.storedBytes() + recordFraming*s.recs.len())
}

// startCompaction claims the compaction when none runs and need holds.
func (s *fileStore) startCompaction(need func() bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.compacting || s.closed || !need() {
		return false
	}
	s.compacting = true
	return true
}

// runCompaction compacts in the background.
func (s *fileStore) runCompaction() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.compact(); err != nil {
			s.log.Error("compaction failed; the log keeps growing until the next try", "err", err)
		}
	}()
}

func (s *fileStore) flush() {
	// Let writers that are ready to run add their frames first: with one
	// processor (GOMAXPROCS=1) they would otherwise wait out this sync.
	runtime.Gosched()
	s.mu.Lock()
	if len(s.pending) == 0 {
		s.mu.Unlock()
		return
	}
	buf, b := s.pending, s.cur
	s.pending, s.cur = s.spare[:0], newBatch()
	s.mu.Unlock()

	s.fileMu.Lock()
	start := time.Now()
	s.preallocate(int64(len(buf)))
	_, err := s.f.WriteAt(buf, s.off)
	if err == nil {
		s.off += int64(len(buf))
		err = syscall.Fdatasync(int(s.f.Fd()))
	}
	if s.onSync != nil {
		s.onSync(time.Since(start))
	}
	if s.tail != nil {
		s.tail = append(s.tail, buf...)
	}
	s.fileMu.Unlock()

	s.mu.Lock()
	if err != nil {
		err = fmt.Errorf("write %s: %w", s.path, err)
		s.broken = err
		s.log.Error("the data file failed a write; refusing writes until restart", "err", err)
	}
	s.spare = buf
	s.mu.Unlock()
	b.err = err
	close(b.done)

	if err == nil && s.startCompaction(s.tooManyDead) {
		s.runCompaction()
	}
}

// preallocStep is how far the file is kept ahead of the log: zeros are
// written preallocStep past what a write needs once it does not fit. The
// batch that needs them pays for them, and a done click writes its 2 KB
// card again, so under a stream of first clicks the zeros are written
// many times a second. One run of bench/run.sh's -data first clicks each
// (a million cards): 28,412 a second with a p99 of 4.7 ms at 1 MB, 30,947
// and 5.5 ms at 2 MB, 30,310 and 13.7 ms at 8 MB; 19,510–21,330 and
// 3.9–4.0 ms the same day with no zeros ahead.
const preallocStep = 1 << 20

// zeroBlock is what the file is kept ahead with.
var zeroBlock [1 << 20]byte

// preallocate makes room in the file for n bytes at the log's end. The
// zeros reach the disk with the sync that follows, which pays for them
// once every preallocStep bytes. A failure (a full disk, say) is left to
// the write that follows to report. Called with s.fileMu held.
func (s *fileStore) preallocate(n int64) {
	if s.off+n <= s.size {
		return
	}
	to := s.off + n + preallocStep
	for at := max(s.size, s.off); at < to; {
		k, err := s.f.WriteAt(zeroBlock[:min(int64(len(zeroBlock)), to-at)], at)
		at += int64(k)
		s.size = max(s.size, at)
		if err != nil {
			return
		}
	}
}

// compact rewrites the log with only live records and renames it into
// place. The caller has claimed it with startCompaction. Writers go on
// meanwhile: frames written after the snapshot are appended to the new
// file before the rename. A crash at any step leaves either the old log or
// the complete new one.
func (s *fileStore) compact() (err error) {
	defer func() {
		s.mu.Lock()
		s.compacting = false
		s.mu.Unlock()
	}()
	tmpPath := s.path + ".tmp"
	s.mu.Lock()
	if s.retention > 0 {
		for _, id := range s.recs.ids(s.expired(s.now().Add(-s.retention))) {
			s.recs.delete(id)
		}
	}
	snap := s.recs.view()
	records := s.recs.len()
	// What is logged from here on goes into the new file too, after the
	// snapshot. Frames pending now go into its tail as well but were
	// counted before, so the new count is short by at most one batch: the
	// next compaction comes that much later.
	logged := s.logBytes
	s.fileMu.Lock()
	s.tail = []byte{}
	s.fileMu.Unlock()
	s.mu.Unlock()
	defer func() {
		if err != nil {
			s.fileMu.Lock()
			s.tail = nil
			s.fileMu.Unlock()
			os.Remove(tmpPath)
		}
	}()

	tmp, err := os.OpenFile(tmpPath, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(tmp, 1<<20)
	w.Write(fileMagic)
	var frame []byte
	var written int64
	snap.each(func(id, card, meta []byte) bool {
		frame = appendPutFrame(frame[:0], id, card, meta)
		w.Write(frame)
		written += int64(len(frame))
		return true
	})
	if err = w.Flush(); err == nil {
		err = tmp.Sync()
	}
	if err == nil && s.hook != nil {
		err = s.hook("snapshot written")
	}
	if err != nil {
		tmp.Close()
		return err
	}

	s.fileMu.Lock()
	if _, err = tmp.Write(s.tail); err == nil {
		err = tmp.Sync()
	}
	if err == nil && s.hook != nil {
		err = s.hook("tail appended")
	}
	if err == nil {
		err = os.Rename(tmpPath, s.path)
	}
	if err != nil {
		s.fileMu.Unlock()
		tmp.Close()
		return err
	}
	// From the rename on, the new file is the log, whatever follows.
	old := s.f
	s.off = int64(len(fileMagic)) + written + int64(len(s.tail))
	s.f, s.size, s.tail = tmp, s.off, nil
	s.fileMu.Unlock()
	old.Close()
	s.mu.Lock()
	s.logBytes = written + s.logBytes - logged
	s.mu.Unlock()
	if s.hook != nil {
		if err := s.hook("renamed"); err != nil {
			return err
		}
	}
	if err := syncDir(s.path); err != nil {
		return fmt.Errorf("compacted, but the directory sync failed: %w", err)
	}
	s.log.Info("data file compacted", "path", s.path, "records", records)
	return nil
}

func running(r *Record) bool {
	for _, c := range r.Clicks {
		if c.Status == StatusRunning {
			return true
		}
	}
	return false
}

// Close flushes what is pending, waits for a compaction, and releases the
// file and its lock.
func (s *fileStore) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	s.fileMu.Lock()
	// The zeros ahead of the log go, so that a file closed cleanly ends
	// with its last frame; one that is left with them reads the same.
	err := s.f.Truncate(s.off)
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	s.fileMu.Unlock()
	s.lock.Close()
	return err
}

// appendFrame appends the frame that puts r under id, or deletes id when
// r is nil.
func appendFrame(buf []byte, id string, r *Record) []byte {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0)
	if r == nil {
		buf = append(buf, opDelete)
		buf = appendString(buf, id)
	} else {
		buf = append(buf, opPut)
		buf = appendString(buf, id)
		buf = binary.AppendVarint(buf, unixNano(r.Updated))
		buf = appendCard(buf, r.Card)
		buf = appendAllowAndClicks(buf, r)
	}
	return sealFrame(buf, start)
}

// appendPutFrame appends the frame that puts a record under id from its
// card and its meta chunk (recordMeta in table.go), which is the frame's
// record without the card.
func appendPutFrame(buf []byte, id, card, meta []byte) []byte {
	_, k := binary.Varint(meta) // updated
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0, opPut)
	buf = appendString(buf, id)
	buf = append(buf, meta[:k]...)
	buf = appendCard(buf, card)
	buf = append(buf, meta[k:]...)
	return sealFrame(buf, start)
}

func appendCard(buf, card []byte) []byte {
	if card == nil {
		return binary.AppendUvarint(buf, 0)
	}
	buf = binary.AppendUvarint(buf, uint64(len(card))+1)
	return append(buf, card...)
}

func appendAllowAndClicks(buf []byte, r *Record) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(r.Allow)))
	for _, a := range r.Allow {
		buf = appendString(buf, a)
	}
	return appendClicks(buf, r.Clicks)
}

// appendStateFrame appends the frame that gives the record under id the
// click states and update time of r, keeping its card and allow list.
func appendStateFrame(buf []byte, id string, r *Record) []byte {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0, opState)
	buf = appendString(buf, id)
	buf = binary.AppendVarint(buf, unixNano(r.Updated))
	return sealFrame(appendClicks(buf, r.Clicks), start)
}

func appendClicks(buf []byte, clicks []ClickState) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(clicks)))
	for _, c := range clicks {
		buf = appendString(buf, c.Key.ButtonType)
		buf = appendString(buf, c.Key.ButtonID)
		buf = append(buf, statusCode(c.Status))
		buf = appendString(buf, c.Reason)
		buf = appendString(buf, c.Operator)
		buf = binary.AppendVarint(buf, unixNano(c.Started))
		buf = binary.AppendVarint(buf, unixNano(c.Finished))
	}
	return buf
}

// sealFrame fills in the header of the frame that starts at start.
func sealFrame(buf []byte, start int) []byte {
	payload := buf[start+8:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(payload, castagnoli))
	return buf
}

func appendString[T string | []byte](buf []byte, s T) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func timeOf(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

var statuses = []Status{StatusRunning, StatusDone, StatusFailed}

func statusCode(s Status) byte {
	for i, st := range statuses {
		if st == s {
			return byte(i + 1)
		}
	}
	return 0
}

// frameReader decodes one payload; the first error sticks.
type frameReader struct {
	b   []byte
	err error
}

var errShortFrame = errors.New("frame ends early")

func (r *frameReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *frameReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail()
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *frameReader) bytes(n uint64) []byte {
	if r.err != nil || n > uint64(len(r.b)) {
		r.fail()
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *frameReader) string() string { return string(r.bytes(r.uvarint())) }

func (r *frameReader) byte() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

// count reads a list length, bounded by what the frame can still hold.
func (r *frameReader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.fail()
		return 0
	}
	return int(n)
}

func (r *frameReader) fail() {
	if r.err == nil {
		r.err = errShortFrame
	}
	r.b = nil
}

// applyFrame decodes a payload and applies it to recs, which copies what
// it keeps: the payload buffer is reused.
func applyFrame(payload []byte, recs *table) error {
	r := &frameReader{b: payload}
	op := r.byte()
	id := r.string()
	if r.err != nil {
		return r.err
	}
	switch op {
	case opDelete:
		recs.delete(id)
		return nil
	case opPut, opState:
	default:
		return fmt.Errorf("unknown operation %d", op)
	}
	rec := &Record{Updated: timeOf(r.varint())}
	if op == opState {
		if cur := recs.get(id); cur != nil {
			rec.Card, rec.Allow = cur.Card, cur.Allow
		}
	} else {
		if n := r.uvarint(); n > 0 {
			rec.Card = r.bytes(n - 1)
		}
		if n := r.count(); n > 0 {
			rec.Allow = make([]string, n)
			for i := range rec.Allow {
				rec.Allow[i] = r.string()
			}
		}
	}
	if n := r.count(); n > 0 {
		rec.Clicks = make([]ClickState, n)
		for i := range rec.Clicks {
			c := &rec.Clicks[i]
			c.Key.ButtonType, c.Key.ButtonID = r.string(), r.string()
			if code := r.byte(); code >= 1 && int(code) <= len(statuses) {
				c.Status = statuses[code-1]
			} else if r.err == nil {
				return fmt.Errorf("unknown click status %d", code)
			}
			c.Reason, c.Operator = r.string(), r.string()
			c.Started, c.Finished = timeOf(r.varint()), timeOf(r.varint())
		}
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return errors.New("frame has trailing bytes")
	}
	recs.put(id, rec)
	return nil
}

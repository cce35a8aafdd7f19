package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func openTestStore(t testing.TB, path string, repair bool) (*fileStore, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	s, err := openFileStore(path, repair, 0, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s, logs
}

func put(t testing.TB, s Store, id string, card string, allow ...string) {
	t.Helper()
	if err := s.Update(id, func(cur *Record) *Record {
		return cur.withCard([]byte(card), nil, allow, time.Unix(1700000000, 0))
	}); err != nil {
		t.Fatal(err)
	}
}

// sameRecords compares what two stores hold, times by instant.
func sameRecords(t testing.TB, got, want map[string]*Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d records, want %d", len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			t.Errorf("%s: missing", id)
			continue
		}
		if !bytes.Equal(g.Card, w.Card) || strings.Join(g.Allow, ",") != strings.Join(w.Allow, ",") ||
			!g.Updated.Equal(w.Updated) || len(g.Clicks) != len(w.Clicks) {
			t.Errorf("%s: got %+v, want %+v", id, g, w)
			continue
		}
		for i := range w.Clicks {
			gc, wc := g.Clicks[i], w.Clicks[i]
			if gc.Key != wc.Key || gc.Status != wc.Status || gc.Reason != wc.Reason || gc.Operator != wc.Operator ||
				!gc.Started.Equal(wc.Started) || !gc.Finished.Equal(wc.Finished) {
				t.Errorf("%s click %d: got %+v, want %+v", id, i, gc, wc)
			}
		}
	}
}

func snapshot(s *fileStore) map[string]*Record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return tableRecords(s.recs)
}

// fillStore writes a mix of records, states and deletes.
func fillStore(t testing.TB, s Store) {
	t.Helper()
	for i := range 20 {
		put(t, s, fmt.Sprintf("om_%d", i), fmt.Sprintf(`{"elements":[{"tag":"div","n":%d}]}`, i), "ou_a", "ou_b")
	}
	st := ClickState{Key: ClickKey{PublishButton, "b1"}, Status: StatusDone, Operator: "ou_a",
		Started: time.Unix(1700000001, 5), Finished: time.Unix(1700000002, 7)}
	s.Update("om_3", func(cur *Record) *Record { return cur.withClick(st, []byte(`{"done":true}`), time.Unix(1700000003, 0)) })
	st.Key.ButtonID, st.Status, st.Reason = "b2", StatusFailed, "失败 reason"
	s.Update("om_3", func(cur *Record) *Record { return cur.withClick(st, nil, time.Unix(1700000004, 0)) })
	s.Update("om_nocard", func(cur *Record) *Record { return cur.withClick(st, nil, time.Unix(1700000005, 0)) })
	s.Update("om_5", func(*Record) *Record { return nil })
}

func TestFileStoreReplay(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, _ := openTestStore(t, path, false)
	fillStore(t, s)
	want := snapshot(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Update("x", func(*Record) *Record { return &Record{} }); !errors.Is(err, errStoreClosed) {
		t.Errorf("write after close: got %v, want errStoreClosed", err)
	}
	s2, _ := openTestStore(t, path, false)
	defer s2.Close()
	sameRecords(t, snapshot(s2), want)
	if _, ok := s2.Get("om_5"); ok {
		t.Error("a deleted record came back")
	}
	if r, _ := s2.Get("om_nocard"); r.Card != nil {
		t.Errorf("a record without card got card %q", r.Card)
	}
}

func TestFileStoreEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	os.WriteFile(path, nil, 0o600)
	s, _ := openTestStore(t, path, false)
	if s.Len() != 0 {
		t.Errorf("got %d records, want 0", s.Len())
	}
	put(t, s, "om_1", `{}`)
	s = reopen(t, s, path)
	if s.Len() != 1 {
		t.Errorf("got %d records, want 1", s.Len())
	}
}

func TestFileStoreNotOurs(t *testing.T) {
	for _, content := range []string{"somebody's notes, not ours", "PK\x03"} {
		path := filepath.Join(t.TempDir(), "notes.txt")
		os.WriteFile(path, []byte(content), 0o600)
		for _, repair := range []bool{false, true} {
			_, err := openFileStore(path, repair, 0, slog.New(slog.DiscardHandler))
			if err == nil || !strings.Contains(err.Error(), "not a cardcallback data file") {
				t.Errorf("%q repair=%v: got %v, want a refusal", content, repair, err)
			}
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Errorf("the file was changed to %q", b)
		}
	}
}

func TestFileStoreTornTail(t *testing.T) {
	frame := appendFrame(nil, "om_torn", &Record{Card: []byte(`{"torn":true}`)})
	for _, tc := range []struct {
		name string
		tail []byte
	}{
		{"half a header", frame[:5]},
		{"header and half the payload", frame[:len(frame)-4]},
		{"whole frame, last byte wrong", append(append([]byte{}, frame[:len(frame)-1]...), frame[len(frame)-1]^0xff)},
		// Written into the zeros ahead of the log (preallocStep).
		{"half a frame, then zeros", append(append([]byte{}, frame[:len(frame)-4]...), make([]byte, 4096)...)},
		{"whole frame, last byte wrong, then zeros", append(append(append([]byte{}, frame[:len(frame)-1]...), frame[len(frame)-1]^0xff), make([]byte, 4096)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, want, size := filledWithTail(t, tc.tail)
			s, logs := openTestStore(t, path, false)
			sameRecords(t, snapshot(s), want)
			if !strings.Contains(logs.String(), "torn write") || !strings.Contains(logs.String(), fmt.Sprintf("bytes=%d", len(tc.tail))) {
				t.Errorf("no warning about the torn tail's %d bytes:\n%s", len(tc.tail), logs)
			}
			if after, _ := os.Stat(path); after.Size() != size {
				t.Errorf("size after the cut: %d, want %d", after.Size(), size)
			}
			put(t, s, "om_after", `{}`)
			s = reopen(t, s, path)
			if _, ok := s.Get("om_after"); !ok || s.Len() != len(want)+1 {
				t.Error("a write after the cut was lost")
			}
		})
	}
}

// filledWithTail writes fillStore's records to a new data file, closes it
// and appends tail, as a crash could leave it. It returns the file, the
// records and the file's size before tail.
func filledWithTail(t *testing.T, tail []byte) (path string, want map[string]*Record, size int64) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "cards.db")
	s, _ := openTestStore(t, path, false)
	fillStore(t, s)
	want = snapshot(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err == nil {
		_, err = f.Write(tail)
	}
	if err != nil {
		t.Fatal(err)
	}
	return path, want, fi.Size()
}

// TestFileStoreZerosAhead: the file is kept ahead of the log with zeros,
// which a crash leaves in place; they read as free space, with no warning,
// and a clean close cuts them off.
func TestFileStoreZerosAhead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, _ := openTestStore(t, path, false)
	fillStore(t, s)
	want := snapshot(s)
	frames := s.off
	if fi, _ := os.Stat(path); fi.Size() < preallocStep || fi.Size() <= frames {
		t.Fatalf("file of %d bytes with the log ending at %d: not kept ahead", fi.Size(), frames)
	}
	// A copy made now is the file as a crash would leave it.
	crashed, _ := os.ReadFile(path)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Size() != frames {
		t.Errorf("closed file of %d bytes, want %d: the zeros ahead stay", fi.Size(), frames)
	}
	os.WriteFile(path, crashed, 0o600)

	s, logs := openTestStore(t, path, false)
	sameRecords(t, snapshot(s), want)
	if logs.String() != "" {
		t.Errorf("warned about free space:\n%s", logs)
	}
	put(t, s, "om_after", `{}`)
	if fi, _ := os.Stat(path); fi.Size() != int64(len(crashed)) {
		t.Errorf("the write went elsewhere than into the zeros: %d bytes, want %d", fi.Size(), len(crashed))
	}
	s = reopen(t, s, path)
	if _, ok := s.Get("om_after"); !ok || s.Len() != len(want)+1 {
		t.Error("a write into the zeros was lost")
	}
}

// TestFileStoreZerosThenData: bytes after the zeros were never written
// ahead of the log by the store, so the file is damaged, not torn.
func TestFileStoreZerosThenData(t *testing.T) {
	frame := appendFrame(nil, "om_x", &Record{Card: []byte(`{}`)})
	path, _, _ := filledWithTail(t, append(append(frame[:len(frame)-2:len(frame)-2], make([]byte, 4096)...), frame...))
	if _, err := openFileStore(path, false, 0, slog.New(slog.DiscardHandler)); !errors.Is(err, errDamaged) {
		t.Errorf("got %v, want the file reported damaged", err)
	}
}

func TestFileStoreDamageInTheMiddle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, _ := openTestStore(t, path, false)
	for i := range 10 {
		put(t, s, fmt.Sprintf("om_%d", i), `{"elements":[]}`)
	}
	s.Close()
	data, _ := os.ReadFile(path)
	frameLen := len(appendFrame(nil, "om_0", &Record{Card: []byte(`{"elements":[]}`), Updated: time.Unix(1700000000, 0)}))
	off := len(fileMagic) + 4*frameLen // the fifth frame
	data[off+12] ^= 0x40
	os.WriteFile(path, data, 0o600)

	_, err := openFileStore(path, false, 0, slog.New(slog.DiscardHandler))
	if !errors.Is(err, errDamaged) || !strings.Contains(err.Error(), fmt.Sprintf("offset %d", off)) || !strings.Contains(err.Error(), "-repair") {
		t.Fatalf("got %v, want damage at offset %d and a hint at -repair", err, off)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, data) {
		t.Error("a refused start changed the file")
	}

	s, logs := openTestStore(t, path, true)
	if s.Len() != 4 {
		t.Errorf("repair kept %d records, want the 4 before the damage", s.Len())
	}
	if !strings.Contains(logs.String(), "repaired") {
		t.Errorf("no warning about the repair:\n%s", logs)
	}
	if aside, err := os.ReadFile(path + ".damaged"); err != nil || !bytes.Equal(aside, data) {
		t.Errorf("the damaged file was not moved aside intact: %v", err)
	}
	put(t, s, "om_new", `{}`)
	s = reopen(t, s, path)
	if s.Len() != 5 {
		t.Errorf("after repair and a write: %d records, want 5", s.Len())
	}
}

func TestFileStoreOneProcessPerFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, _ := openTestStore(t, path, false)
	_, err := openFileStore(path, false, 0, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "in use by another cardcallback") {
		t.Errorf("got %v, want the file reported in use", err)
	}
	s.Close()
	s, _ = openTestStore(t, path, false)
	s.Close()
}

func TestFileStoreFailsRunningClicksAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, _ := openTestStore(t, path, false)
	put(t, s, "om_1", `{}`)
	s.Update("om_1", func(cur *Record) *Record {
		return cur.withClick(ClickState{Key: ClickKey{PublishButton, "b1"}, Status: StatusRunning, Started: time.Now()}, nil, time.Now())
	})
	s.Close()
	s, logs := openTestStore(t, path, false)
	r, _ := s.Get("om_1")
	st, _ := r.Click(ClickKey{PublishButton, "b1"})
	if st.Status != StatusFailed || st.Reason != "interrupted by restart" {
		t.Errorf("got %+v, want failed: interrupted by restart", st)
	}
	if !strings.Contains(logs.String(), "om_1") {
		t.Errorf("no warning naming the message:\n%s", logs)
	}
	s = reopen(t, s, path) // and that was written down
	r, _ = s.Get("om_1")
	if st, _ := r.Click(ClickKey{PublishButton, "b1"}); st.Status != StatusFailed {
		t.Errorf("after another restart: %+v, want failed", st)
	}
}

func TestFileStoreConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, _ := openTestStore(t, path, false)
	var wg sync.WaitGroup
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				put(t, s, fmt.Sprintf("om_%d_%d", w, i), fmt.Sprintf(`{"w":%d,"i":%d}`, w, i))
			}
		}()
	}
	wg.Wait()
	want := snapshot(s)
	s = reopen(t, s, path)
	if s.Len() != 64*40 {
		t.Errorf("got %d records, want %d", s.Len(), 64*40)
	}
	sameRecords(t, snapshot(s), want)
}

func TestFileStoreCompaction(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, logs := openTestStore(t, path, false)
	pad := strings.Repeat("x", 1000)
	for i := range 5000 { // 5 MB of cards, 10 KB of them live
		put(t, s, fmt.Sprintf("om_%d", i%10), fmt.Sprintf(`{"v":%d,"pad":"%s"}`, i, pad))
	}
	want := snapshot(s)
	s.Close() // waits for a compaction under way
	if !strings.Contains(logs.String(), "compacted") {
		t.Fatalf("5000 writes to 10 records did not compact:\n%s", logs)
	}
	fi, _ := os.Stat(path)
	frame := len(appendFrame(nil, "om_0", want["om_0"]))
	// What was live, what may have died since the last compaction, and
	// a batch written while it ran.
	if limit := int64(10*frame + minCompact + 64*frame); fi.Size() > limit {
		t.Errorf("file is %d bytes after compaction, want at most %d", fi.Size(), limit)
	}
	s, _ = openTestStore(t, path, false)
	defer s.Close()
	sameRecords(t, snapshot(s), want)
}

// Click states are small frames: thousands of them beside a few large
// cards leave the log mostly live, and rewriting every card for them
// would be a waste. A count of frames called for a rewrite every 1,024
// states; the dead bytes here are past minCompact but not past the live.
func TestFileStoreStatesDoNotCompactLargeCards(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, logs := openTestStore(t, path, false)
	pad := strings.Repeat("x", 500<<10)
	for i := range 10 { // 5 MB of cards
		put(t, s, fmt.Sprintf("om_%d", i), fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, pad))
	}
	for i := range 25000 { // about 1.4 MB of states
		st := ClickState{Key: ClickKey{PublishButton, "b"}, Status: StatusFailed, Reason: fmt.Sprintf("try %d", i), Operator: "ou_1"}
		update := s.UpdateNoWait
		if i%1000 == 999 {
			update = s.Update // a sync, after which a compaction is considered
		}
		if err := update(fmt.Sprintf("om_%d", i%10), func(cur *Record) *Record { return cur.withClick(st, nil, time.Now()) }); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	logged, live := s.logBytes, s.liveBytes()
	s.mu.Unlock()
	if dead := logged - live; dead < minCompact || dead > live {
		t.Fatalf("the log holds %d dead bytes beside %d live, want more than %d and less than the live", dead, live, minCompact)
	}
	s.Close()
	if strings.Contains(logs.String(), "compacted") {
		t.Errorf("states of 10 cards were compacted with the cards:\n%s", logs)
	}
	fi, _ := os.Stat(path)
	if fi.Size() != int64(len(fileMagic))+logged {
		t.Errorf("the file has %d bytes, the store counted %d", fi.Size(), int64(len(fileMagic))+logged)
	}
}

// The live bytes are what a compaction writes, within the framing's
// estimate, and the log's size is counted on from there.
func TestFileStoreCountsTheCompactedLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, _ := openTestStore(t, path, false)
	for i := range 300 {
		put(t, s, fmt.Sprintf("om_%d", i%100), fmt.Sprintf(`{"v":%d}`, i))
		st := ClickState{Key: ClickKey{PublishButton, "b"}, Status: StatusDone, Operator: "ou_1"}
		if err := s.Update(fmt.Sprintf("om_%d", i%100), func(cur *Record) *Record { return cur.withClick(st, nil, time.Now()) }); err != nil {
			t.Fatal(err)
		}
	}
	// om_during goes into the new file after the snapshot, and is counted.
	if err := compactWriting(t, s, ""); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	logged, live := s.logBytes, s.liveBytes()
	s.mu.Unlock()
	fi, _ := os.Stat(path)
	if size := fi.Size() - int64(len(fileMagic)); logged != size {
		t.Errorf("after compaction the store counts %d bytes of frames, the file has %d", logged, size)
	}
	// The framing's estimate is within a byte of each record's.
	if d, n := logged-live, int64(s.Len()); d < -n || d > n {
		t.Errorf("%d records compacted to %d bytes, estimated live at %d", n, logged, live)
	}
	s = reopen(t, s, path)
	defer s.Close()
	s.mu.Lock()
	reopened, relive := s.logBytes, s.liveBytes()
	s.mu.Unlock()
	if reopened != logged || relive != live {
		t.Errorf("reopened, the store counts %d bytes, %d live; before, %d and %d", reopened, relive, logged, live)
	}
}

// compactWriting runs a compaction of s that writes om_during while the
// snapshot is copied, as writers go on meanwhile, and fails with "crash" at
// the step named crashAt ("" for none).
func compactWriting(t *testing.T, s *fileStore, crashAt string) error {
	t.Helper()
	s.hook = func(at string) error {
		if at == "snapshot written" {
			put(t, s, "om_during", `{"during":true}`)
		}
		if at == crashAt {
			return errors.New("crash")
		}
		return nil
	}
	defer func() { s.hook = nil }()
	if !s.startCompaction(func() bool { return true }) {
		t.Fatal("could not claim the compaction")
	}
	return s.compact()
}

func TestFileStoreCompactionInterrupted(t *testing.T) {
	for _, step := range []string{"snapshot written", "tail appended", "renamed"} {
		t.Run(step, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cards.db")
			s, _ := openTestStore(t, path, false)
			fillStore(t, s)
			if err := compactWriting(t, s, step); err == nil || err.Error() != "crash" {
				t.Fatalf("got %v, want the injected crash", err)
			}
			put(t, s, "om_after", `{"after":true}`)
			want := snapshot(s)
			// A crash: the process ends with whatever is on disk. Every
			// write above was acknowledged, so all of it must be there.
			s = reopen(t, s, path)
			sameRecords(t, snapshot(s), want)
			if _, err := os.Stat(path + ".tmp"); err == nil {
				t.Error("the unfinished compaction's file was left behind")
			}
		})
	}
}

func TestFileStoreRetention(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, err := openFileStore(path, false, time.Hour, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1700000000, 0)
	s.now = func() time.Time { return now }
	old := now.Add(-2 * time.Hour)
	s.Update("om_old", func(cur *Record) *Record { return cur.withCard([]byte(`{}`), nil, nil, old) })
	s.Update("om_running", func(cur *Record) *Record {
		return cur.withClick(ClickState{Key: ClickKey{PublishButton, "b"}, Status: StatusRunning}, nil, old)
	})
	s.Update("om_new", func(cur *Record) *Record { return cur.withCard([]byte(`{}`), nil, nil, now) })
	if !s.startCompaction(s.hasExpired) {
		t.Fatal("an expired record did not call for a compaction")
	}
	if err := s.compact(); err != nil {
		t.Fatal(err)
	}
	s = reopen(t, s, path)
	for id, want := range map[string]bool{"om_old": false, "om_running": true, "om_new": true} {
		if _, ok := s.Get(id); ok != want {
			t.Errorf("%s kept: %v, want %v", id, ok, want)
		}
	}
}

func TestFileStoreWriteFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, logs := openTestStore(t, path, false)
	put(t, s, "om_1", `{}`)
	s.fileMu.Lock()
	s.f.Close() // the disk goes away
	s.fileMu.Unlock()
	for range 2 {
		if err := s.Update("om_2", func(cur *Record) *Record { return cur.withCard([]byte(`{}`), nil, nil, time.Now()) }); err == nil {
			t.Error("a write to a failed file was acknowledged")
		}
	}
	if !strings.Contains(logs.String(), "refusing writes") {
		t.Errorf("no error logged:\n%s", logs)
	}
	s.Close()
}

func TestFrameDecodeRejectsGarbage(t *testing.T) {
	good := appendFrame(nil, "om_1", &Record{Card: []byte(`{}`), Allow: []string{"a"},
		Clicks: []ClickState{{Key: ClickKey{"t", "i"}, Status: StatusDone}}})[8:]
	for i := range len(good) {
		if applyFrame(good[:i], newTable()) == nil {
			t.Errorf("a payload cut at %d of %d decoded", i, len(good))
		}
	}
	if err := applyFrame(append(append([]byte{}, good...), 0), newTable()); err == nil {
		t.Error("trailing bytes decoded")
	}
	if err := applyFrame([]byte{9, 1, 'x'}, newTable()); err == nil {
		t.Error("an unknown operation decoded")
	}
}

func TestDurableClickSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	card := readFixture(t, "card_v1_i18n.json")
	done, _ := doneCard(card)
	var l countingLogic

	s, _ := openTestStore(t, path, false)
	e := newEnvWith(t, baseConfig(), s, l.logic, nil)
	e.putCard("om_1", card, "?allow=ou_op")
	wantAnswer(t, Legacy, e.click(Legacy, testClick("om_1")), done, nil)
	e.runner.shutdown(context.Background())
	s.Close()

	s, _ = openTestStore(t, path, false)
	defer s.Close()
	e = newEnvWith(t, baseConfig(), s, l.logic, nil)
	sameJSON(t, e.getCard("om_1"), done)
	wantAnswer(t, New, e.click(New, testClick("om_1")), done, &toastRepeat)
	if l.n.Load() != 1 {
		t.Errorf("the logic ran %d times across a restart, want once", l.n.Load())
	}
	other := testClick("om_1")
	other.Value = publishValue("b2")
	other.OpenID, other.UserID, other.UnionID = "ou_x", "u_x", "on_x"
	wantAnswer(t, New, e.click(New, other), nil, &toastNotAllowed) // the allow list survived too
}

func TestFileStoreUpdateNoWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, _ := openTestStore(t, path, false)
	running := ClickState{Key: ClickKey{PublishButton, "b1"}, Status: StatusRunning}
	if err := s.UpdateNoWait("om_1", func(cur *Record) *Record { return cur.withClick(running, nil, time.Now()) }); err != nil {
		t.Fatal(err)
	}
	if r, ok := s.Get("om_1"); !ok || len(r.Clicks) != 1 {
		t.Fatal("the change is not visible at once")
	}
	put(t, s, "om_2", `{}`) // a write that waits takes the earlier one along
	s.fileMu.Lock()
	data, _ := os.ReadFile(path)
	s.fileMu.Unlock()
	recs := newTable()
	f, _ := os.Open(path)
	replay(f, int64(len(data)), recs)
	f.Close()
	if recs.get("om_1") == nil || recs.get("om_2") == nil {
		t.Errorf("on disk after the waiting write: %v, want both records", tableRecords(recs))
	}
	if err := s.UpdateNoWait("om_3", func(cur *Record) *Record { return cur.withCard([]byte(`{}`), nil, nil, time.Now()) }); err != nil {
		t.Fatal(err)
	}
	s.Close() // and Close writes what is pending
	s, _ = openTestStore(t, path, false)
	defer s.Close()
	if _, ok := s.Get("om_3"); !ok {
		t.Error("a pending write was lost at Close")
	}
}

func TestFileStoreClickStateDoesNotRewriteTheCard(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	s, _ := openTestStore(t, path, false)
	card := string(card2K(1))
	put(t, s, "om_1", card, "ou_a")
	before := fileSize(t, path)
	st := ClickState{Key: ClickKey{PublishButton, "b1"}, Status: StatusFailed, Reason: "canary still draining", Operator: "ou_a", Started: time.Unix(1700000001, 0)}
	if err := s.Update("om_1", func(cur *Record) *Record { return cur.withClick(st, nil, st.Started) }); err != nil {
		t.Fatal(err)
	}
	if grew := fileSize(t, path) - before; grew > 200 {
		t.Errorf("recording a click state wrote %d bytes, want it without the %d-byte card", grew, len(card))
	}
	want := snapshot(s)
	s2 := reopen(t, s, path)
	sameRecords(t, snapshot(s2), want)
}

func TestFileStoreReadsFormat1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cards.db")
	old := append([]byte(nil), fileMagicV1...)
	old = appendFrame(old, "om_1", (*Record)(nil).withCard([]byte(`{"elements":[]}`), nil, []string{"ou_a"}, time.Unix(1700000000, 0)))
	old = appendFrame(old, "om_2", (*Record)(nil).withCard([]byte(`{"n":2}`), nil, nil, time.Unix(1700000000, 0)))
	old = appendFrame(old, "om_2", nil)
	if err := os.WriteFile(path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	s, logs := openTestStore(t, path, false)
	if r, ok := s.Get("om_1"); !ok || string(r.Card) != `{"elements":[]}` || len(r.Allow) != 1 {
		t.Fatalf("format 1 record: %+v %v", r, ok)
	}
	if _, ok := s.Get("om_2"); ok {
		t.Error("a record deleted in the format 1 file came back")
	}
	head := make([]byte, len(fileMagic))
	f, _ := os.Open(path)
	f.Read(head)
	f.Close()
	if !bytes.Equal(head, fileMagic) || !strings.Contains(logs.String(), "format 2") {
		t.Errorf("header %q after open, want %q, and a log line saying so:\n%s", head, fileMagic, logs)
	}
	st := ClickState{Key: ClickKey{PublishButton, "b1"}, Status: StatusFailed, Reason: "no", Operator: "ou_a"}
	s.Update("om_1", func(cur *Record) *Record { return cur.withClick(st, nil, time.Unix(1700000002, 0)) })
	want := snapshot(s)
	s2 := reopen(t, s, path)
	sameRecords(t, snapshot(s2), want)
}

func fileSize(t testing.TB, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// reopen closes s and opens the store at path again, as a restart would.
func reopen(t testing.TB, s *fileStore, path string) *fileStore {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, _ := openTestStore(t, path, false)
	t.Cleanup(func() { s2.Close() })
	return s2
}

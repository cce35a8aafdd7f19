package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// tableRecords decodes every record of t.
func tableRecords(t *table) map[string]*Record {
	out := make(map[string]*Record, t.len())
	for _, id := range t.ids(func(*slot) bool { return true }) {
		out[id] = t.get(id)
	}
	return out
}

// TestTableHoldsNoPointers pins what the table is for: the collector has
// nothing to walk in its index or its slots, whatever their number.
func TestTableHoldsNoPointers(t *testing.T) {
	var hasPointers func(reflect.Type) bool
	hasPointers = func(ty reflect.Type) bool {
		switch ty.Kind() {
		case reflect.Struct:
			for i := range ty.NumField() {
				if hasPointers(ty.Field(i).Type) {
					return true
				}
			}
			return false
		case reflect.Array:
			return hasPointers(ty.Elem())
		case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			return false
		}
		return true
	}
	tb := newTable()
	index := reflect.TypeOf(tb.index)
	for _, ty := range []reflect.Type{reflect.TypeFor[slot](), reflect.TypeOf(tb.pages).Elem(), index.Key(), index.Elem()} {
		if hasPointers(ty) {
			t.Errorf("%v holds pointers", ty)
		}
	}
}

// sameRecord reports how got differs from want, or "".
func sameRecord(got, want *Record) string {
	switch {
	case got == nil || want == nil:
		if got != want {
			return fmt.Sprintf("got %v, want %v", got, want)
		}
	case !bytes.Equal(got.Card, want.Card) || (got.Card == nil) != (want.Card == nil):
		return fmt.Sprintf("card %q, want %q", got.Card, want.Card)
	case !bytes.Equal(got.Done, want.Done) || (got.Done == nil) != (want.Done == nil):
		return fmt.Sprintf("done %q, want %q", got.Done, want.Done)
	case !reflect.DeepEqual(got.Allow, want.Allow):
		return fmt.Sprintf("allow %q, want %q", got.Allow, want.Allow)
	case !got.Updated.Equal(want.Updated):
		return fmt.Sprintf("updated %v, want %v", got.Updated, want.Updated)
	case len(got.Clicks) != len(want.Clicks):
		return fmt.Sprintf("clicks %+v, want %+v", got.Clicks, want.Clicks)
	default:
		for i, w := range want.Clicks {
			g := got.Clicks[i]
			if g.Key != w.Key || g.Status != w.Status || g.Reason != w.Reason || g.Operator != w.Operator ||
				!g.Started.Equal(w.Started) || !g.Finished.Equal(w.Finished) {
				return fmt.Sprintf("click %d: %+v, want %+v", i, g, w)
			}
		}
	}
	return ""
}

func TestTableKeepsWhatItIsGiven(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	two := []ClickState{
		{Key: ClickKey{PublishButton, "b1"}, Status: StatusDone, Operator: "ou_a", Started: at, Finished: at.Add(time.Second)},
		{Key: ClickKey{"other", ""}, Status: StatusFailed, Reason: "决策: no", Operator: "ou_b", Started: at},
	}
	for _, tc := range []struct {
		name string
		rec  *Record
	}{
		{"card only", &Record{Card: []byte(`{"a":1}`), Done: []byte(`{"a":2}`), Updated: at}},
		{"no card, one running click", &Record{Clicks: []ClickState{{Key: ClickKey{PublishButton, "b1"}, Status: StatusRunning, Started: at}}}},
		{"empty card is not no card", &Record{Card: []byte{}, Done: []byte{}}},
		{"allow list and two clicks", &Record{Card: []byte(`{}`), Allow: []string{"ou_a", "", "ou_é"}, Clicks: two, Updated: at}},
		{"zero times", &Record{Card: []byte(`{}`), Clicks: []ClickState{{Status: StatusDone}}}},
		{"done is the card", func() *Record { c := []byte(`{"done":1}`); return &Record{Card: c, Done: c} }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable()
			tb.put("om_1", tc.rec)
			if diff := sameRecord(tb.get("om_1"), tc.rec); diff != "" {
				t.Error(diff)
			}
			if tb.get("om_2") != nil || tb.len() != 1 {
				t.Errorf("len %d, om_2 %v: want 1 record, no om_2", tb.len(), tb.get("om_2"))
			}
		})
	}
}

// TestTableUpdateKeepsTheCardWhereItIs: a click state written over a
// record does not copy its card, and the done card that becomes the card
// is not copied either.
func TestTableUpdateKeepsTheCardWhereItIs(t *testing.T) {
	tb := newTable()
	now := time.Unix(1700000000, 0)
	tb.put("om_1", (*Record)(nil).withCard(card2K(1), renderDone(card2K(1)), nil, now))
	stored := tb.get("om_1")
	st := ClickState{Key: ClickKey{PublishButton, "b1"}, Status: StatusRunning, Started: now}
	tb.put("om_1", stored.withClick(st, nil, now))
	running := tb.get("om_1")
	if &running.Card[0] != &stored.Card[0] || &running.Done[0] != &stored.Done[0] {
		t.Error("a click state copied the card")
	}
	st.Status = StatusDone
	tb.put("om_1", running.withClick(st, running.Done, now))
	done := tb.get("om_1")
	if &done.Card[0] != &stored.Done[0] || &done.Done[0] != &stored.Done[0] {
		t.Error("the done card was copied when it became the card")
	}
	if diff := sameRecord(done, running.withClick(st, running.Done, now)); diff != "" {
		t.Error(diff)
	}
	if app := append(done.Card, 'x'); &app[0] == &done.Card[0] {
		t.Error("an append to a card read from the table writes into the table")
	}
}

// TestTableChains puts ids whose hashes all collide, so that every
// operation walks a chain, and deletes from its head, middle and tail.
func TestTableChains(t *testing.T) {
	tb := newTable()
	tb.hash = func(string) uint64 { return 7 }
	want := map[string]*Record{}
	for i := range 6 {
		id := "om_" + strconv.Itoa(i)
		want[id] = &Record{Card: []byte(id)}
		tb.put(id, want[id])
	}
	for _, id := range []string{"om_5", "om_2", "om_0", "om_9"} { // head (the last put), middle, tail, absent
		tb.delete(id)
		delete(want, id)
		check(t, tb, want)
	}
	tb.put("om_2", &Record{Card: []byte("again")}) // reuses a freed slot
	want["om_2"] = &Record{Card: []byte("again")}
	check(t, tb, want)
}

func check(t *testing.T, tb *table, want map[string]*Record) {
	t.Helper()
	if tb.len() != len(want) {
		t.Errorf("len %d, want %d", tb.len(), len(want))
	}
	got := tableRecords(tb)
	if len(got) != len(want) {
		t.Errorf("%d records, want %d", len(got), len(want))
	}
	for id, w := range want {
		if diff := sameRecord(tb.get(id), w); diff != "" {
			t.Errorf("%s: %s", id, diff)
		}
	}
}

// TestTableAgainstAMap runs random puts, click updates, done cards and
// deletes against a map, and checks every record, the records read before
// the blocks under them were compacted, and that the blocks stay within
// about twice the bytes the records hold.
func TestTableAgainstAMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tb := newTable()
	want := map[string]*Record{}
	type held struct {
		rec  *Record
		card []byte // a copy of its card when it was read
	}
	var readers []held
	now := time.Unix(1700000000, 0)
	ids := 3000
	for step := range 60000 {
		id := "om_" + strconv.Itoa(rng.IntN(ids))
		cur := tb.get(id)
		var next *Record
		switch op := rng.IntN(10); {
		case op < 3 || cur == nil:
			card := bytes.Repeat([]byte{byte('a' + step%26)}, 200+rng.IntN(3000))
			if rng.IntN(500) == 0 {
				card = bytes.Repeat([]byte("big"), blockSize/2) // a block of its own
			}
			var allow []string
			if rng.IntN(4) == 0 {
				allow = []string{"ou_" + strconv.Itoa(step)}
			}
			next = cur.withCard(card, append(card[:len(card):len(card)], '!'), allow, now.Add(time.Duration(step)))
		case op < 6:
			next = cur.withClick(ClickState{Key: ClickKey{PublishButton, strconv.Itoa(rng.IntN(3))}, Status: StatusRunning,
				Operator: "ou_" + strconv.Itoa(step)}, nil, now)
		case op < 8:
			next = cur.withClick(ClickState{Key: ClickKey{PublishButton, "0"}, Status: StatusDone}, cur.Done, now)
		default:
			tb.delete(id)
			delete(want, id)
			continue
		}
		tb.put(id, next)
		want[id] = next
		if step%97 == 0 {
			r := tb.get(id)
			readers = append(readers, held{r, bytes.Clone(r.Card)})
		}
	}
	check(t, tb, want)
	stored := 0
	for id, r := range want {
		stored += len(id) + len(r.Card) + len(encodeMeta(nil, r))
	}
	if tb.storedBytes() != stored {
		t.Errorf("the table counts %d stored bytes, its records hold %d", tb.storedBytes(), stored)
	}
	for i, h := range readers {
		if !bytes.Equal(h.rec.Card, h.card) {
			t.Fatalf("record %d read earlier changed under its reader", i)
		}
	}
	var live, blocks int
	for _, r := range want {
		live += len(r.Card) + 200
		if !sameBytes(r.Done, r.Card) {
			live += len(r.Done)
		}
	}
	for _, b := range tb.blocks {
		blocks += cap(b.b)
	}
	if blocks > 2*live+2*blockSize {
		t.Errorf("blocks hold %d bytes for %d live: compaction does not keep up", blocks, live)
	}
	t.Logf("%d records, %d live bytes, %d in %d blocks", len(want), live, blocks, len(tb.blocks))
}

// TestMetaRoundTrip: a record's meta chunk decodes to the record, empty
// strings beside others included, and a card not clicked yet costs one
// allocation to decode (the Record), not a copy of its strings too.
func TestMetaRoundTrip(t *testing.T) {
	at := time.Unix(1700000000, 5)
	for _, r := range []*Record{
		{Updated: at},
		{Allow: []string{"ou_a", ""}, Updated: at},
		{Clicks: []ClickState{{Key: ClickKey{PublishButton, ""}, Status: StatusDone, Operator: "ou_a", Started: at, Finished: at}}},
		{Clicks: []ClickState{
			{Key: ClickKey{"", "b"}, Status: StatusFailed, Reason: "r"},
			{Key: ClickKey{PublishButton, "b2"}, Status: StatusRunning, Started: at},
		}, Updated: at},
	} {
		if d := sameRecord(decodeMeta(encodeMeta(nil, r)), r); d != "" {
			t.Errorf("%+v: %s", r, d)
		}
	}
	meta := encodeMeta(nil, &Record{Updated: at})
	if n := testing.AllocsPerRun(100, func() { decodeMeta(meta) }); n != 1 {
		t.Errorf("decoding an unclicked card's meta made %v allocations, want 1", n)
	}
}

// TestPutFrameFromChunks: a compaction writes a record's frame from its
// card and meta chunks; it must be the frame appendFrame writes.
func TestPutFrameFromChunks(t *testing.T) {
	at := time.Unix(1700000000, 5)
	for _, r := range []*Record{
		{Card: []byte(`{"a":1}`), Updated: at},
		{Allow: []string{"ou_a"}, Clicks: []ClickState{{Key: ClickKey{PublishButton, "b"}, Status: StatusFailed, Reason: "r", Started: at}}},
		{Card: []byte{}, Updated: at.Add(-2 * time.Hour)},
	} {
		got := appendPutFrame(nil, []byte("om_1"), r.Card, encodeMeta(nil, r))
		if want := appendFrame(nil, "om_1", r); !bytes.Equal(got, want) {
			t.Errorf("%+v: frame\n%x, want\n%x", r, got, want)
		}
	}
}

// BenchmarkStoreGC measures a full garbage collection with 2 KB cards
// stored (100,000 unless CARDCALLBACK_BENCH_CARDS says otherwise), half
// of them clicked done: the work the collector does for the store on every
// cycle, which on one processor is what holds requests up while it runs.
func BenchmarkStoreGC(b *testing.B) {
	n := benchCards(100_000)
	s := newMemStore()
	now := time.Now()
	for i := range n {
		card := card2K(i)
		id := "om_" + strconv.Itoa(i)
		s.Update(id, func(cur *Record) *Record { return cur.withCard(card, renderDone(card), nil, now) })
		if i%2 == 0 {
			st := ClickState{Key: ClickKey{PublishButton, "b1"}, Status: StatusDone, Operator: "ou_" + strconv.Itoa(i), Started: now, Finished: now}
			s.Update(id, func(cur *Record) *Record { return cur.withClick(st, cur.Done, now) })
		}
	}
	runtime.GC()
	b.ReportAllocs()
	for b.Loop() {
		runtime.GC()
	}
	runtime.KeepAlive(s)
}

package main

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
)

// table holds a store's records in memory the garbage collector has almost
// nothing to walk in. A map of string ids to *Record costs the collector
// several pointers per record (the id, the record, its card, its rendered
// done card, its click states' strings) on every cycle: with 400,000
// cards stored, a cycle's marking took about 200 ms of CPU, and on one
// processor it held requests up by up to 10 ms at a time. Here the index
// maps a hash of the id to a slot, the slots are plain numbers, and every
// byte a record holds (its id, card, done card and the rest, encoded) sits
// in large blocks: a few hundred pointers in all, however many records.
//
// A record read from the table is decoded into a new Record whose Card and
// Done point into a block, without a copy. Blocks are append-only: bytes
// once written never change, and a block that is dropped stays alive for
// as long as a Record points into it, so a Record stays valid after the
// table has moved on. A chunk no longer used counts as dead; a block that
// is half dead has its live chunks copied to the current block and is
// dropped (its number reused), so memory stays within about twice what the
// records hold. Updates copy only what changed: a new click state rewrites
// the record's small meta chunk, not its card.
//
// A table is not safe for concurrent use on its own: its store guards it,
// writes under a write lock, get under a read lock.
type table struct {
	hash   func(string) uint64
	index  map[uint64]uint32 // hash of the id → the first slot of its chain
	pages  [][slotsPerPage]slot
	nslots uint32 // slots handed out, free ones included
	free   []uint32
	n      int // records
	// stored is the bytes of the records' ids, cards and meta chunks:
	// what a data file's frames of them hold, besides their framing.
	stored int

	blocks     []block
	cur        uint32   // the block chunks are appended to
	freeBlocks []uint32 // numbers of dropped blocks, for reuse
	todo       []uint32 // blocks that may be half dead
	scratch    []byte
}

const (
	slotsPerPage = 1024
	// blockSize is the size of a block of chunks; a chunk larger than a
	// quarter of it gets a block of its own.
	blockSize = 1 << 20
	// chunkHead is a chunk's header: its length and its slot, so that a
	// block can be walked and each chunk's owner checked.
	chunkHead = 8
)

// span locates a chunk's bytes; n is their length plus one, 0 for nil.
type span struct{ block, off, n uint32 }

// len is the length of the chunk's bytes.
func (sp span) len() int { return int(max(sp.n, 1) - 1) }

// slot is one record: where its bytes are, and what the store's
// housekeeping reads without decoding it. It holds no pointers
// (TestTableHoldsNoPointers).
type slot struct {
	hash    uint64
	next    uint32 // the next slot of the chain, plus one; 0 ends it
	id      span   // n == 0: the slot is free
	card    span
	done    span
	meta    span // recordMeta
	updated int64
	running bool
}

type block struct {
	b    []byte
	dead int // bytes of chunks no longer used
}

func newTable() *table {
	seed := maphash.MakeSeed()
	return &table{
		hash:  func(id string) uint64 { return maphash.String(seed, id) },
		index: make(map[uint64]uint32),
	}
}

func (t *table) len() int { return t.n }

// storedBytes is the bytes of the records' ids, cards and meta chunks.
func (t *table) storedBytes() int { return t.stored }

func (t *table) slot(i uint32) *slot { return &t.pages[i/slotsPerPage][i%slotsPerPage] }

// find returns the slot holding id.
func (t *table) find(id string) (uint32, bool) {
	i, ok := t.index[t.hash(id)]
	for ok {
		s := t.slot(i)
		if string(t.bytes(s.id)) == id {
			return i, true
		}
		i, ok = s.next-1, s.next != 0
	}
	return 0, false
}

// get returns the record stored under id, or nil.
func (t *table) get(id string) *Record {
	i, ok := t.find(id)
	if !ok {
		return nil
	}
	return t.record(t.slot(i))
}

func (t *table) record(s *slot) *Record {
	r := decodeMeta(t.bytes(s.meta))
	r.Card, r.Done = t.bytes(s.card), t.bytes(s.done)
	return r
}

// update replaces the record under id by what fn returns, or deletes it
// when fn returns nil, finding its slot once. It returns the record fn was
// given (nil if none) and fn's.
func (t *table) update(id string, fn func(*Record) *Record) (cur, r *Record) {
	i, ok := t.find(id)
	if ok {
		cur = t.record(t.slot(i))
	}
	switch r = fn(cur); {
	case r != nil && ok:
		t.putAt(i, r)
	case r != nil:
		t.putAt(t.newSlot(id), r)
	case ok:
		t.deleteAt(i)
	}
	return cur, r
}

// put stores r under id.
func (t *table) put(id string, r *Record) {
	i, ok := t.find(id)
	if !ok {
		i = t.newSlot(id)
	}
	t.putAt(i, r)
}

// putAt stores r in slot i. Bytes of r that are the bytes of the record it
// replaces (a done card that becomes the card) are kept where they are.
func (t *table) putAt(i uint32, r *Record) {
	s := t.slot(i)
	old := *s
	s.card = t.keep(i, r.Card, old, span{}, nil)
	s.done = t.keep(i, r.Done, old, s.card, r.Card)
	t.scratch = encodeMeta(t.scratch[:0], r)
	s.meta = t.write(i, t.scratch)
	s.updated, s.running = unixNano(r.Updated), running(r)
	t.stored += s.card.len() + s.meta.len() - old.card.len() - old.meta.len()
	if old.card != s.card && old.card != s.done {
		t.release(old.card)
	}
	if old.done != old.card && old.done != s.card && old.done != s.done {
		t.release(old.done)
	}
	t.release(old.meta)
	t.settle()
}

// keep returns the span for b: one of old's when b is its bytes, also when
// b is same's bytes (sameSpan), else a new chunk.
func (t *table) keep(i uint32, b []byte, old slot, sameSpan span, same []byte) span {
	switch {
	case b == nil:
		return span{}
	case sameSpan.n != 0 && sameBytes(b, same):
		return sameSpan
	case old.card.n != 0 && sameBytes(b, t.bytes(old.card)):
		return old.card
	case old.done.n != 0 && sameBytes(b, t.bytes(old.done)):
		return old.done
	}
	return t.write(i, b)
}

// sameBytes reports whether a and b are the same memory, not equal bytes.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// delete removes the record under id, if any.
func (t *table) delete(id string) {
	if i, ok := t.find(id); ok {
		t.deleteAt(i)
	}
}

// deleteAt removes the record in slot i.
func (t *table) deleteAt(i uint32) {
	s := t.slot(i)
	// Unlink it from its chain.
	if head := t.index[s.hash]; head == i {
		if s.next == 0 {
			delete(t.index, s.hash)
		} else {
			t.index[s.hash] = s.next - 1
		}
	} else {
		p := t.slot(head)
		for p.next-1 != i {
			p = t.slot(p.next - 1)
		}
		p.next = s.next
	}
	t.release(s.id)
	t.release(s.card)
	if s.done != s.card {
		t.release(s.done)
	}
	t.release(s.meta)
	t.stored -= s.id.len() + s.card.len() + s.meta.len()
	*s = slot{}
	t.free = append(t.free, i)
	t.n--
	t.settle()
}

// newSlot takes a slot for id and links it into the index.
func (t *table) newSlot(id string) uint32 {
	var i uint32
	if n := len(t.free); n > 0 {
		i, t.free = t.free[n-1], t.free[:n-1]
	} else {
		if t.nslots%slotsPerPage == 0 {
			t.pages = append(t.pages, [slotsPerPage]slot{})
		}
		i = t.nslots
		t.nslots++
	}
	h := t.hash(id)
	s := t.slot(i)
	*s = slot{hash: h}
	if head, ok := t.index[h]; ok {
		s.next = head + 1
	}
	t.index[h] = i
	t.scratch = append(t.scratch[:0], id...)
	s.id = t.write(i, t.scratch)
	t.stored += s.id.len()
	t.n++
	return i
}

// bytes returns a chunk's bytes, capped so that an append cannot write
// into the block.
func (t *table) bytes(sp span) []byte {
	if sp.n == 0 {
		return nil
	}
	end := sp.off + uint32(sp.len())
	return t.blocks[sp.block].b[sp.off:end:end]
}

// write appends a chunk owned by slot i holding b.
func (t *table) write(i uint32, b []byte) span {
	need := chunkHead + len(b)
	var bi uint32
	if need > blockSize/4 {
		bi = t.newBlock(need)
	} else {
		if len(t.blocks) == 0 {
			t.cur = t.newBlock(blockSize)
		} else if len(t.blocks[t.cur].b)+need > cap(t.blocks[t.cur].b) {
			t.todo = append(t.todo, t.cur) // sealed: compact it if it is half dead already
			t.cur = t.newBlock(blockSize)
		}
		bi = t.cur
	}
	blk := &t.blocks[bi]
	off := len(blk.b)
	blk.b = binary.LittleEndian.AppendUint32(blk.b, uint32(len(b)))
	blk.b = binary.LittleEndian.AppendUint32(blk.b, i)
	blk.b = append(blk.b, b...)
	return span{bi, uint32(off + chunkHead), uint32(len(b)) + 1}
}

func (t *table) newBlock(size int) uint32 {
	b := block{b: make([]byte, 0, size)}
	if n := len(t.freeBlocks); n > 0 {
		bi := t.freeBlocks[n-1]
		t.freeBlocks = t.freeBlocks[:n-1]
		t.blocks[bi] = b
		return bi
	}
	t.blocks = append(t.blocks, b)
	return uint32(len(t.blocks) - 1)
}

// release marks a chunk dead.
func (t *table) release(sp span) {
	if sp.n == 0 {
		return
	}
	blk := &t.blocks[sp.block]
	blk.dead += chunkHead + sp.len()
	if 2*blk.dead >= len(blk.b) {
		t.todo = append(t.todo, sp.block)
	}
}

// settle compacts the blocks that became half dead.
func (t *table) settle() {
	for len(t.todo) > 0 {
		bi := t.todo[len(t.todo)-1]
		t.todo = t.todo[:len(t.todo)-1]
		if blk := t.blocks[bi]; bi != t.cur && len(blk.b) > 0 && 2*blk.dead >= len(blk.b) {
			t.compact(bi)
		}
	}
}

// compact copies the live chunks of block bi to the current block and
// drops bi. A chunk is live when its slot still points at it.
func (t *table) compact(bi uint32) {
	b := t.blocks[bi].b
	for off := 0; off < len(b); {
		n := binary.LittleEndian.Uint32(b[off:])
		owner := binary.LittleEndian.Uint32(b[off+4:])
		at := span{bi, uint32(off + chunkHead), n + 1}
		off += chunkHead + int(n)
		s := t.slot(owner)
		var moved span
		for _, p := range []*span{&s.id, &s.card, &s.done, &s.meta} {
			if *p == at {
				if moved.n == 0 {
					moved = t.write(owner, t.bytes(at))
				}
				*p = moved
			}
		}
	}
	t.blocks[bi] = block{}
	t.freeBlocks = append(t.freeBlocks, bi)
}

// tableView is a copy of a table's slots that stays readable without the
// store's lock: the blocks it points into never change.
type tableView struct {
	t      *table // for bytes and record, on the copied blocks
	slots  [][slotsPerPage]slot
	nslots uint32
}

// view copies what a reader outside the lock needs: the slots and the
// block list, not the blocks.
func (t *table) view() tableView {
	v := &table{blocks: slices.Clone(t.blocks)}
	return tableView{t: v, slots: slices.Clone(t.pages), nslots: t.nslots}
}

// each calls fn with each record's id, card and meta (recordMeta), in slot
// order, until fn returns false.
func (v tableView) each(fn func(id, card, meta []byte) bool) {
	for i := range v.nslots {
		s := &v.slots[i/slotsPerPage][i%slotsPerPage]
		if s.id.n != 0 && !fn(v.t.bytes(s.id), v.t.bytes(s.card), v.t.bytes(s.meta)) {
			return
		}
	}
}

// ids returns the ids of the records whose slot matches.
func (t *table) ids(match func(s *slot) bool) []string {
	var ids []string
	for i := range t.nslots {
		if s := t.slot(i); s.id.n != 0 && match(s) {
			ids = append(ids, string(t.bytes(s.id)))
		}
	}
	return ids
}

// recordMeta is what a record holds besides its card and done card, as a
// chunk:
//
//	meta = updated:varint nallow:uvarint (len:uvarint bytes)* clicks
//
// with clicks as in the data file (durable.go). It is the data file's
// record without the card, so that a compaction writes a record's frame
// from its chunks without decoding it.
func encodeMeta(buf []byte, r *Record) []byte {
	buf = binary.AppendVarint(buf, unixNano(r.Updated))
	return appendAllowAndClicks(buf, r)
}

// decodeMeta decodes a chunk encodeMeta wrote. The strings of the record
// are cut from one string of the whole chunk, made at the first string
// that is not empty: one allocation, not one per string, and none for a
// card not clicked yet.
func decodeMeta(meta []byte) *Record {
	var all string
	r := &frameReader{b: meta}
	str := func() string {
		n := r.uvarint()
		at := len(meta) - len(r.b)
		if n == 0 || r.bytes(n) == nil {
			return ""
		}
		if all == "" {
			all = string(meta)
		}
		return all[at : at+int(n)]
	}
	updated := timeOf(r.varint())
	var allow []string
	if n := r.count(); n > 0 {
		allow = make([]string, n)
		for i := range allow {
			allow[i] = str()
		}
	}
	var rec *Record
	switch n := r.count(); n {
	case 0:
		rec = &Record{}
	case 1:
		one := &struct {
			rec   Record
			state [1]ClickState
		}{}
		rec = &one.rec
		rec.Clicks = one.state[:]
	default:
		rec = &Record{Clicks: make([]ClickState, n)}
	}
	for i := range rec.Clicks {
		c := &rec.Clicks[i]
		c.Key.ButtonType, c.Key.ButtonID = str(), str()
		if code := r.byte(); code >= 1 && int(code) <= len(statuses) {
			c.Status = statuses[code-1]
		}
		c.Reason, c.Operator = str(), str()
		c.Started, c.Finished = timeOf(r.varint()), timeOf(r.varint())
	}
	rec.Updated, rec.Allow = updated, allow
	return rec
}

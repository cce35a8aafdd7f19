package main

import (
	"errors"
	"slices"
	"sync"
	"time"
)

// Status is where a click's business logic stands.
type Status string

const (
	StatusRunning Status = "running"
	StatusDone    Status = "done"
	StatusFailed  Status = "failed"
)

// ClickState is the recorded outcome of one button of one message.
type ClickState struct {
	Key      ClickKey
	Status   Status
	Reason   string // why it failed
	Operator string // open_id of whoever ran it
	Started  time.Time
	Finished time.Time
}

// Record is everything stored under one message id. Records are values
// shared between goroutines: a stored Record is never modified, a change
// stores a new one (see Record.with).
type Record struct {
	Card []byte // compact JSON object; nil when only click state is known
	// Done is Card rendered as done, rendered when the card is stored so
	// that a click does not pay for it; nil until known. It is not
	// persisted: a record read back from disk renders it on its first
	// click.
	Done    []byte
	Allow   []string // per-card allow list; empty means the global one
	Clicks  []ClickState
	Updated time.Time
}

// Click returns the state of key, if any.
func (r *Record) Click(key ClickKey) (ClickState, bool) {
	if r == nil {
		return ClickState{}, false
	}
	for _, c := range r.Clicks {
		if c.Key == key {
			return c, true
		}
	}
	return ClickState{}, false
}

// withClick returns a copy of r (which may be nil) with st recorded and,
// when card is not nil, the card replaced by card, a done card (rendering
// a done card as done changes nothing, so it is its own Done).
func (r *Record) withClick(st ClickState, card []byte, now time.Time) *Record {
	var n *Record
	if r == nil || len(r.Clicks) == 0 || len(r.Clicks) == 1 && r.Clicks[0].Key == st.Key {
		// A card with one button, the usual case: the record and its one
		// state in one allocation.
		one := &struct {
			rec   Record
			state [1]ClickState
		}{state: [1]ClickState{st}}
		n = &one.rec
		n.Clicks = one.state[:]
	} else {
		n = &Record{Clicks: make([]ClickState, 0, len(r.Clicks)+1)}
		for _, c := range r.Clicks {
			if c.Key != st.Key {
				n.Clicks = append(n.Clicks, c)
			}
		}
		n.Clicks = append(n.Clicks, st)
	}
	n.Updated = now
	if r != nil {
		n.Card, n.Done, n.Allow = r.Card, r.Done, r.Allow
	}
	if card != nil {
		n.Card, n.Done = card, card
	}
	return n
}

// withCard returns a copy of r (which may be nil) holding card, its done
// rendering (nil if not known) and allow, keeping the click states:
// replacing a card must not let a done release run again.
func (r *Record) withCard(card, done []byte, allow []string, now time.Time) *Record {
	n := &Record{Card: card, Done: done, Allow: slices.Clone(allow), Updated: now}
	if r != nil {
		n.Clicks = r.Clicks
	}
	return n
}

// errStoreClosed is returned by writes after Close.
var errStoreClosed = errors.New("store is closed")

// Store holds the records. It knows nothing of Feishu: the callback handler
// and the click runner translate between the two.
type Store interface {
	// Get returns the record stored under id. The record must not be modified.
	Get(id string) (*Record, bool)
	// Update replaces the record under id by what fn returns, or deletes it
	// when fn returns nil, atomically with respect to other updates. fn gets
	// the current record or nil, must not modify it, and must not call the
	// store. Update returns once the change is as durable as the store makes
	// it.
	Update(id string, fn func(cur *Record) *Record) error
	// UpdateNoWait is Update without waiting for durability: for a state
	// no answer depends on (a click that started running), which reaches
	// the disk with the next write that does wait.
	UpdateNoWait(id string, fn func(cur *Record) *Record) error
	// Len is the number of records.
	Len() int
	// Close releases the store; later writes fail.
	Close() error
}

// memStore is the in-memory Store: fast, and forgets everything on exit.
type memStore struct {
	mu     sync.RWMutex
	recs   *table
	closed bool
}

func newMemStore() *memStore { return &memStore{recs: newTable()} }

func (s *memStore) Get(id string) (*Record, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.recs.get(id)
	return r, r != nil
}

func (s *memStore) Update(id string, fn func(*Record) *Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errStoreClosed
	}
	s.recs.update(id, fn)
	return nil
}

func (s *memStore) UpdateNoWait(id string, fn func(*Record) *Record) error { return s.Update(id, fn) }

func (s *memStore) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.recs.len()
}

func (s *memStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

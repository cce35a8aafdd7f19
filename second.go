package main

import (
	"sync/atomic"
	"time"
)

// perSecond holds a value made from a time's second, for the last second
// asked about: log lines and answers come many to a second, and making
// such a value (formatting a time) was a good share of each. It is safe
// for concurrent use; a value is made again only when the second, or the
// time's location, changes.
type perSecond[V any] struct {
	last atomic.Pointer[secondValue[V]]
}

type secondValue[V any] struct {
	unix int64
	loc  *time.Location
	v    V
}

// get returns newValue(t) as it was made for t's second and location.
// newValue must depend on nothing finer than the second.
func (c *perSecond[V]) get(t time.Time, newValue func(time.Time) V) V {
	if s := c.last.Load(); s != nil && s.unix == t.Unix() && s.loc == t.Location() {
		return s.v
	}
	v := newValue(t)
	c.last.Store(&secondValue[V]{t.Unix(), t.Location(), v})
	return v
}

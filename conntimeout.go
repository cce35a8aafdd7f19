package main

import (
	"context"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// connTimeouts closes connections that take too long, with one sweep a
// second, in place of http.Server's ReadHeaderTimeout, ReadTimeout,
// WriteTimeout and IdleTimeout. net/http enforces those by setting a
// deadline on the connection four times a request, each a clock read and
// a runtime timer reset: 2.5% of a repeat click's instructions, about
// 1 µs of its ~25 under load on one core. Here a request costs a few
// atomic loads and stores of its connection's phase, the sweep reads every
// connection's phase once a second, and a connection is closed no sooner
// than its phase's limit and at most two periods after it.
//
// The limits follow a connection through its requests: a new connection,
// and one whose next request has begun to arrive, has limit[phaseHeader]
// to deliver the request's headers; from then on (reading the body,
// running the handler, writing the answer) it has limit[phaseActive];
// between requests, limit[phaseIdle]. Closing the connection is what
// net/http's deadlines come to: a read or write on it fails, and net/http
// drops it without an answer.
type connTimeouts struct {
	limit  [numPhases]time.Duration
	period time.Duration
	start  time.Time
	clock  atomic.Int64 // time since start, in ns, as of the last sweep

	mu    sync.Mutex
	conns map[*timedConn]struct{}

	cut func(connPhase) // counts a connection closed for its phase's limit
}

// connPhase is what a connection is doing, for its time limit.
type connPhase uint8

const (
	phaseHeader connPhase = iota // new, or a request's first bytes are in: reading its headers
	phaseActive                  // reading the body, running the handler, writing the answer
	phaseIdle                    // waiting for the next request
	numPhases
)

func (p connPhase) String() string {
	switch p {
	case phaseHeader:
		return "header"
	case phaseActive:
		return "active"
	case phaseIdle:
		return "idle"
	}
	return "unknown"
}

func newConnTimeouts(header, active, idle time.Duration) *connTimeouts {
	return &connTimeouts{
		limit:  [numPhases]time.Duration{phaseHeader: header, phaseActive: active, phaseIdle: idle},
		period: time.Second,
		start:  time.Now(),
		conns:  make(map[*timedConn]struct{}),
		cut:    func(connPhase) {},
	}
}

// timedConn is an accepted connection with its phase and when, on the
// sweep's clock, the phase began.
type timedConn struct {
	net.Conn
	t     *connTimeouts
	state atomic.Uint64 // since<<2 | phase
}

func pack(p connPhase, since int64) uint64 { return uint64(since)<<2 | uint64(p) }

func unpack(v uint64) (connPhase, time.Duration) { return connPhase(v & 3), time.Duration(v >> 2) }

func (c *timedConn) enter(p connPhase) { c.state.Store(pack(p, c.t.clock.Load())) }

// Read marks the start of a request's headers: the first bytes that
// arrive on an idle connection.
func (c *timedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		if v := c.state.Load(); connPhase(v&3) == phaseIdle {
			// Not a Store: a phase net/http set meanwhile stands.
			c.state.CompareAndSwap(v, pack(phaseHeader, c.t.clock.Load()))
		}
	}
	return n, err
}

// CloseWrite keeps the half-close net/http uses, after a body too large
// to read, to let the client read the answer before the connection ends.
func (c *timedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// listener wraps ln so that the connections it accepts can be timed.
func (t *connTimeouts) listener(ln net.Listener) net.Listener { return timedListener{ln, t} }

type timedListener struct {
	net.Listener
	t *connTimeouts
}

func (l timedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &timedConn{Conn: c, t: l.t}, nil
}

// connState is the http.Server's ConnState hook: it tracks the phases of
// the connections the server's listener came from t.listener, or from the
// fast path (a handedConn).
func (t *connTimeouts) connState(nc net.Conn, s http.ConnState) {
	tc, ok := nc.(interface{ timed() *timedConn })
	if !ok {
		return
	}
	c := tc.timed()
	if c == nil {
		return
	}
	switch s {
	case http.StateNew:
		t.track(c)
	case http.StateActive:
		c.enter(phaseActive)
	case http.StateIdle:
		c.enter(phaseIdle)
	case http.StateHijacked, http.StateClosed:
		t.forget(c)
	}
}

func (c *timedConn) timed() *timedConn { return c }

// track times c from now on, reading its headers.
func (t *connTimeouts) track(c *timedConn) {
	c.enter(phaseHeader)
	t.mu.Lock()
	t.conns[c] = struct{}{}
	t.mu.Unlock()
}

// forget stops timing c.
func (t *connTimeouts) forget(c *timedConn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// run sweeps every period until ctx ends.
func (t *connTimeouts) run(ctx context.Context) {
	tick := time.NewTicker(t.period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.sweep(time.Since(t.start))
		}
	}
}

// sweep sets the clock to now and closes the connections past their
// phase's limit. A phase's start is the clock's value when it began, up to
// a period before it really did (more only if a sweep ran late), so a
// connection is closed only once its phase is a period older than the
// limit on the clock.
func (t *connTimeouts) sweep(now time.Duration) {
	t.clock.Store(int64(now))
	t.mu.Lock()
	defer t.mu.Unlock()
	for c := range t.conns {
		p, since := unpack(c.state.Load())
		if now-since > t.limit[p]+t.period {
			// Forgotten now, so that it is closed and counted once;
			// net/http reports it closed later.
			delete(t.conns, c)
			c.Close()
			t.cut(p)
		}
	}
}

// open returns how many connections are tracked.
func (t *connTimeouts) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

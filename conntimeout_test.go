package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// fakeConn is a connection whose reads return what is queued in it and
// which records being closed.
type fakeConn struct {
	net.Conn
	in     []byte
	closed int
}

func (c *fakeConn) Read(b []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := copy(b, c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *fakeConn) Close() error { c.closed++; return nil }

// TestConnTimeoutsKeepEachLimit checks the guarantee connTimeouts gives:
// with sweeps once a period, a connection is closed no sooner than its
// phase's limit after the phase really began, and at most two periods
// later, wherever the phase began between two sweeps.
func TestConnTimeoutsKeepEachLimit(t *testing.T) {
	// Limits that are not whole periods, as -respond-within makes the
	// active one.
	const header, active, idle = 5500 * time.Millisecond, 17250 * time.Millisecond, 2 * time.Minute
	for p := range numPhases {
		for _, offset := range []time.Duration{0, time.Millisecond, 500 * time.Millisecond, time.Second - time.Nanosecond} {
			t.Run(fmt.Sprintf("%s/%v", p, offset), func(t *testing.T) {
				ct := newConnTimeouts(header, active, idle)
				limit := ct.limit[p]
				var cut []connPhase
				ct.cut = func(p connPhase) { cut = append(cut, p) }
				fc := &fakeConn{}
				c := &timedConn{Conn: fc, t: ct}
				// The phase begins offset after the sweep at 10 s.
				ct.sweep(10 * time.Second)
				began := 10*time.Second + offset
				ct.connState(c, http.StateNew)
				switch p {
				case phaseActive:
					ct.connState(c, http.StateActive)
				case phaseIdle:
					ct.connState(c, http.StateActive)
					ct.connState(c, http.StateIdle)
				}
				for now := 11 * time.Second; fc.closed == 0; now += ct.period {
					if now > began+limit+time.Minute {
						t.Fatalf("still open at %v, %v into the phase", now, now-began)
					}
					ct.sweep(now)
					if fc.closed == 0 {
						continue
					}
					if age := now - began; age <= limit || age > limit+2*ct.period {
						t.Errorf("closed %v into the phase, want in (%v, %v]", age, limit, limit+2*ct.period)
					}
				}
				if len(cut) != 1 || cut[0] != p {
					t.Errorf("counted %v, want one %v", cut, p)
				}
				if n := ct.open(); n != 0 {
					t.Errorf("%d connections still tracked, want 0", n)
				}
				ct.connState(c, http.StateClosed) // net/http's report, after the close
				ct.sweep(time.Hour)
				if fc.closed != 1 || len(cut) != 1 {
					t.Errorf("closed %d times, counted %d, want once", fc.closed, len(cut))
				}
			})
		}
	}
}

// TestConnTimeoutsPhases follows one connection through two requests: its
// limit is always the one of what it is doing.
func TestConnTimeoutsPhases(t *testing.T) {
	ct := newConnTimeouts(5*time.Second, 17*time.Second, 2*time.Minute)
	fc := &fakeConn{}
	c := &timedConn{Conn: fc, t: ct}
	phase := func() connPhase { p, _ := unpack(c.state.Load()); return p }
	steps := []struct {
		name string
		do   func()
		want connPhase
	}{
		{"accepted", func() { ct.connState(c, http.StateNew) }, phaseHeader},
		{"headers read", func() { ct.connState(c, http.StateActive) }, phaseActive},
		{"a read while active", func() { fc.in = []byte("x"); c.Read(make([]byte, 1)) }, phaseActive},
		{"answered", func() { ct.connState(c, http.StateIdle) }, phaseIdle},
		{"a read of nothing while idle", func() { c.Read(make([]byte, 4)) }, phaseIdle},
		{"the next request's first bytes", func() { fc.in = []byte("POST"); c.Read(make([]byte, 4)) }, phaseHeader},
		{"its headers read", func() { ct.connState(c, http.StateActive) }, phaseActive},
	}
	for _, s := range steps {
		s.do()
		if got := phase(); got != s.want {
			t.Fatalf("%s: phase %v, want %v", s.name, got, s.want)
		}
	}
	// The second request's headers began at 100 s: the header limit runs
	// from there, not from when the connection went idle.
	ct.connState(c, http.StateIdle)
	ct.sweep(100 * time.Second)
	fc.in = []byte("POST")
	c.Read(make([]byte, 4))
	ct.sweep(106 * time.Second)
	if fc.closed != 0 {
		t.Fatal("closed 6 s after the headers began, within the 5 s limit and its period")
	}
	ct.sweep(107 * time.Second)
	if fc.closed != 1 {
		t.Fatal("still open 7 s after the headers began")
	}
}

// TestConnTimeoutsOnAServer runs connTimeouts as the server does, in front
// of net/http, with the sweeps driven by the test: a client that stalls
// in its headers, in its body or between requests is cut off at its
// phase's limit and not before, and a client that keeps to them is served.
func TestConnTimeoutsOnAServer(t *testing.T) {
	t.Run("net/http", func(t *testing.T) { testConnTimeoutsOnAServer(t, false) })
	t.Run("fast path", func(t *testing.T) { testConnTimeoutsOnAServer(t, true) })
}

func testConnTimeoutsOnAServer(t *testing.T, fast bool) {
	const header, active, idle = 5 * time.Second, 17 * time.Second, 2 * time.Minute
	ct := newConnTimeouts(header, active, idle)
	states := make(chan http.ConnState, 16)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			return // cut off
		}
		w.Header()["Content-Length"] = []string{"2"}
		io.WriteString(w, "ok")
	})
	hook := func(c net.Conn, s http.ConnState) {
		ct.connState(c, s)
		states <- s
	}
	var addr string
	if fast {
		addr = startFast(t, "/", h, ct, hook).addr
	} else {
		srv := httptest.NewUnstartedServer(h)
		srv.Listener = ct.listener(srv.Listener)
		srv.Config.ConnState = hook
		srv.Start()
		defer srv.Close()
		addr = srv.Listener.Addr().String()
	}
	// next returns the next state of the test's one connection.
	next := func(t *testing.T) http.ConnState {
		t.Helper()
		select {
		case s := <-states:
			return s
		case <-time.After(30 * time.Second): // a safety net
			t.Fatal("no state change in 30 s")
		}
		return 0
	}
	await := func(t *testing.T, want http.ConnState) {
		t.Helper()
		if s := next(t); s != want {
			t.Fatalf("connection state %v, want %v", s, want)
		}
	}
	// cutOff checks that the server has closed conn without an answer.
	cutOff := func(t *testing.T, conn net.Conn) {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a safety net
		wantClosed(t, conn)
		// net/http reports a connection it read part of a request from
		// as active before it reports it closed.
		s := next(t)
		if s == http.StateActive {
			s = next(t)
		}
		if s != http.StateClosed {
			t.Errorf("connection state %v, want closed", s)
		}
	}
	request := func(t *testing.T, conn net.Conn, r *bufio.Reader) {
		t.Helper()
		fmt.Fprint(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
		res, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK || string(b) != "ok" {
			t.Fatalf("got %d %q, want 200 ok", res.StatusCode, b)
		}
	}
	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		await(t, http.StateNew)
		return conn, bufio.NewReader(conn)
	}
	now := time.Duration(0)
	sweepAt := func(d time.Duration) { now += d; ct.sweep(now) }
	// outlast sweeps past limit: conn is open at the last sweep it may be
	// and closed at the next.
	outlast := func(t *testing.T, conn net.Conn, limit time.Duration) {
		t.Helper()
		sweepAt(limit + ct.period)
		if ct.open() != 1 {
			t.Fatal("cut off within the limit")
		}
		sweepAt(ct.period)
		cutOff(t, conn)
	}

	t.Run("headers never finished", func(t *testing.T) {
		conn, _ := dial(t)
		fmt.Fprint(conn, "POST / HTTP/1.1\r\nHost: x\r\n")
		outlast(t, conn, header)
	})
	t.Run("body never finished", func(t *testing.T) {
		conn, _ := dial(t)
		fmt.Fprint(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
		await(t, http.StateActive)
		outlast(t, conn, active)
	})
	t.Run("idle too long", func(t *testing.T) {
		conn, r := dial(t)
		request(t, conn, r)
		await(t, http.StateActive)
		await(t, http.StateIdle)
		sweepAt(idle + ct.period)
		request(t, conn, r) // within the limit: served on the same connection
		await(t, http.StateActive)
		await(t, http.StateIdle)
		outlast(t, conn, idle)
	})
	if n := ct.open(); n != 0 {
		t.Errorf("%d connections still tracked, want 0", n)
	}
}

// TestTimedConnKeepsTheHalfClose checks that a timed connection can still
// be half closed, as net/http does after a body too large to read so that
// the client reads the answer: the peer sees the end of the stream while
// the connection still reads. So can a timed connection the fast path
// hands to net/http.
func TestTimedConnKeepsTheHalfClose(t *testing.T) {
	for _, handed := range []bool{false, true} {
		ct := newConnTimeouts(time.Second, time.Second, time.Second)
		client, sc := acceptedPair(t, func(ln net.Listener) net.Listener { return ct.listener(ln) })
		if handed {
			sc = &handedConn{sc, bufio.NewReader(sc)}
		}
		cw, ok := sc.(interface{ CloseWrite() error })
		if !ok {
			t.Fatalf("%T has no CloseWrite", sc)
		}
		if err := cw.CloseWrite(); err != nil {
			t.Fatal(err)
		}
		if b, err := io.ReadAll(client); err != nil || len(b) != 0 {
			t.Fatalf("%T: the client read %q, %v; want the end of the stream", sc, b, err)
		}
		fmt.Fprint(client, "still open")
		b := make([]byte, len("still open"))
		if _, err := io.ReadFull(sc, b); err != nil || string(b) != "still open" {
			t.Errorf("%T: after the half close the server read %q, %v", sc, b, err)
		}
	}
}

// acceptedPair connects a client to a loopback listener, wrapped by wrap,
// and returns both ends; the test closes them.
func acceptedPair(t *testing.T, wrap func(net.Listener) net.Listener) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	client.SetDeadline(time.Now().Add(30 * time.Second)) // a safety net
	server, err = wrap(ln).Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

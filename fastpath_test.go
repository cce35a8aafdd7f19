package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fastServer is the fast path in front of net/http, as run sets them up,
// on a loopback port.
type fastServer struct {
	addr     string
	fp       *fastPath
	srv      *http.Server
	logs     *syncBuffer
	mu       sync.Mutex
	handoffs map[headVerdict]int
}

// startFast serves h on path through the fast path and net/http. With
// ct, connections are timed by it, as run times them, and state is the
// servers' ConnState hook.
func startFast(t *testing.T, path string, h http.Handler, ct *connTimeouts, state func(net.Conn, http.ConnState)) *fastServer {
	t.Helper()
	var ln net.Listener
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if ct != nil {
		ln = ct.listener(ln)
	}
	s := &fastServer{addr: ln.Addr().String(), logs: &syncBuffer{}, handoffs: map[headVerdict]int{}}
	s.srv = &http.Server{Handler: h, ConnState: state}
	s.fp = newFastPath(ln, path, s.srv, slog.New(slog.NewTextHandler(s.logs, nil)))
	s.fp.handedOff = func(v headVerdict) {
		s.mu.Lock()
		s.handoffs[v]++
		s.mu.Unlock()
	}
	go s.fp.serve()
	go s.srv.Serve(s.fp)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second) // a safety net
		defer cancel()
		s.fp.shutdown(ctx)
		s.srv.Shutdown(ctx)
	})
	return s
}

func (s *fastServer) handedOff() map[headVerdict]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.handoffs)
}

// dial opens a raw connection to s.
func (s *fastServer) dial(t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a safety net
	return conn, bufio.NewReader(conn)
}

// readAnswer reads one answer from r.
func readAnswer(t *testing.T, r *bufio.Reader) (*http.Response, string) {
	t.Helper()
	res, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	return res, string(b)
}

// wantClosed checks that the server closed the connection r reads, with
// nothing more sent.
func wantClosed(t *testing.T, r io.Reader) {
	t.Helper()
	b, err := io.ReadAll(r)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server still holds the connection")
	}
	if len(b) > 0 {
		t.Errorf("got %q, want the connection closed", b)
	}
}

// probe answers what it was asked, and which server asked it.
var probe = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	_, fast := w.(*fastWriter)
	answer := fmt.Sprintf("fast=%v %s %s host=%s sig=%q body=%q", fast, r.Method, r.URL.Path, r.Host, r.Header.Get("X-Lark-Signature"), body)
	w.Header()["Content-Length"] = []string{strconv.Itoa(len(answer))}
	io.WriteString(w, answer)
})

func click(body string) string {
	return fmt.Sprintf("POST /webhook/card HTTP/1.1\r\nHost: cb\r\nX-Lark-Signature: s-%s\r\nContent-Length: %d\r\n\r\n%s", body, len(body), body)
}

func TestFastPathServesCallbacksAndHandsOffTheRest(t *testing.T) {
	s := startFast(t, "/webhook/card", probe, nil, nil)
	conn, r := s.dial(t)
	for i, step := range []struct{ send, want string }{
		{click("a"), `fast=true POST /webhook/card host=cb sig="s-a" body="a"`},
		{click("b"), `fast=true POST /webhook/card host=cb sig="s-b" body="b"`},
		// Another route: the connection is net/http's from here on.
		{"GET /other HTTP/1.1\r\nHost: cb\r\n\r\n", `fast=false GET /other host=cb sig="" body=""`},
		{click("c"), `fast=false POST /webhook/card host=cb sig="s-c" body="c"`},
	} {
		io.WriteString(conn, step.send)
		res, got := readAnswer(t, r)
		if res.StatusCode != 200 || got != step.want {
			t.Errorf("request %d: got %d %s, want 200 %s", i, res.StatusCode, got, step.want)
		}
	}
	if got := s.handedOff(); got[headRoute] != 1 || len(got) != 1 {
		t.Errorf("handed off %v, want one connection for its route", got)
	}
}

func TestFastPathPipelines(t *testing.T) {
	s := startFast(t, "/webhook/card", probe, nil, nil)
	conn, r := s.dial(t)
	io.WriteString(conn, click("1")+click("2")+click("3"))
	for _, b := range []string{"1", "2", "3"} {
		want := fmt.Sprintf(`fast=true POST /webhook/card host=cb sig="s-%s" body="%s"`, b, b)
		if _, got := readAnswer(t, r); got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
}

// TestFastPathHandsOff: what the fast path does not read itself, net/http
// serves as it would have, from the request's first byte.
func TestFastPathHandsOff(t *testing.T) {
	big := strings.Repeat("x", fastReadSize)
	for _, tc := range []struct {
		name, send, want string
		why              headVerdict
	}{
		{"chunked", "POST /webhook/card HTTP/1.1\r\nHost: cb\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
			`fast=false POST /webhook/card host=cb sig="" body="{}"`, headOther},
		{"HTTP/1.0", "POST /webhook/card HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", `fast=false POST /webhook/card host= sig="" body="{}"`, headRoute},
		{"a body larger than the fast path reads", fmt.Sprintf("POST /webhook/card HTTP/1.1\r\nHost: cb\r\nContent-Length: %d\r\n\r\n%s", len(big), big),
			fmt.Sprintf(`fast=false POST /webhook/card host=cb sig="" body=%q`, big), headSize},
		{"after a fast request", click("a") + "GET /x HTTP/1.1\r\nHost: cb\r\n\r\n", `fast=false GET /x host=cb sig="" body=""`, headRoute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startFast(t, "/webhook/card", probe, nil, nil)
			conn, r := s.dial(t)
			io.WriteString(conn, tc.send)
			res, got := readAnswer(t, r)
			if strings.HasPrefix(tc.name, "after") {
				res, got = readAnswer(t, r)
			}
			if res.StatusCode != 200 || got != tc.want {
				t.Errorf("got %d %.200s, want 200 %.200s", res.StatusCode, got, tc.want)
			}
			if got := s.handedOff(); got[tc.why] != 1 || len(got) != 1 {
				t.Errorf("handed off %v, want one connection for %v", got, tc.why)
			}
		})
	}
	t.Run("Expect: 100-continue", func(t *testing.T) {
		s := startFast(t, "/webhook/card", probe, nil, nil)
		conn, r := s.dial(t)
		io.WriteString(conn, "POST /webhook/card HTTP/1.1\r\nHost: cb\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
		if line, _ := r.ReadString('\n'); line != "HTTP/1.1 100 Continue\r\n" {
			t.Fatalf("got %q, want 100 Continue from net/http", line)
		}
		r.ReadString('\n')
		io.WriteString(conn, "{}")
		if _, got := readAnswer(t, r); got != `fast=false POST /webhook/card host=cb sig="" body="{}"` {
			t.Errorf("got %s", got)
		}
	})
}

func TestFastPathConnectionClose(t *testing.T) {
	closer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Connection"] = []string{"close"}
		w.Header()["Content-Length"] = []string{"2"}
		io.WriteString(w, "ok")
	})
	for _, tc := range []struct {
		name string
		h    http.Handler
		send string
	}{
		{"asked by the client", probe, "POST /webhook/card HTTP/1.1\r\nHost: cb\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"},
		{"asked by the handler", closer, click("{}")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startFast(t, "/webhook/card", tc.h, nil, nil)
			conn, r := s.dial(t)
			io.WriteString(conn, tc.send+tc.send) // the second is not read
			res, _ := readAnswer(t, r)
			if res.StatusCode != 200 || !res.Close {
				t.Errorf("got %d, Connection %q; want 200 and close", res.StatusCode, res.Header.Get("Connection"))
			}
			wantClosed(t, r)
		})
	}
}

// TestFastWriter checks the answers the fast path writes for what a
// handler does, by its raw bytes.
func TestFastWriter(t *testing.T) {
	var mu sync.Mutex
	var writeErr error
	s := startFast(t, "/webhook/card", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h := w.Header()
		switch string(b) {
		case "json":
			h["Content-Type"] = []string{"application/json"}
			h["Content-Length"] = []string{"2"}
			h["Date"] = []string{"Mon, 07 Dec 2026 21:00:00 GMT"}
			h["X-B"] = []string{"line\r\nX-Injected: 1"}
			h["Bad Name"] = []string{"dropped"}
			io.WriteString(w, "{}")
		case "401":
			h["Content-Length"] = []string{"0"}
			w.WriteHeader(http.StatusUnauthorized)
		case "nothing":
		case "short":
			h["Content-Length"] = []string{"10"}
			io.WriteString(w, "ab")
		case "long":
			h["Content-Length"] = []string{"2"}
			io.WriteString(w, "ab")
			_, err := io.WriteString(w, "c")
			mu.Lock()
			writeErr = err
			mu.Unlock()
		case "no length":
			io.WriteString(w, "until the end")
		}
	}), nil, nil)
	for _, tc := range []struct {
		name, body, want string
		closed           bool
	}{
		{"headers sorted, values on one line, names checked", "json",
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\nDate: Mon, 07 Dec 2026 21:00:00 GMT\r\nX-B: line  X-Injected: 1\r\n\r\n{}", false},
		{"a status", "401", "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nDate: *\r\n\r\n", false},
		{"nothing written", "nothing", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nDate: *\r\n\r\n", false},
		{"a body shorter than its length", "short", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nDate: *\r\n\r\nab", true},
		{"a body longer than its length", "long", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: *\r\n\r\nab", false},
		{"no length", "no length", "HTTP/1.1 200 OK\r\nConnection: close\r\nDate: *\r\n\r\nuntil the end", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, r := s.dial(t)
			io.WriteString(conn, click(tc.body))
			var got []byte
			if tc.closed {
				got, _ = io.ReadAll(r)
			} else {
				got = readRawAnswer(t, r)
				io.WriteString(conn, click("nothing")) // the connection carries another
				if res, _ := readAnswer(t, r); res.StatusCode != 200 {
					t.Errorf("the next answer: %d", res.StatusCode)
				}
			}
			if !matchDate(string(got), tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
	mu.Lock()
	defer mu.Unlock()
	if writeErr != http.ErrContentLength {
		t.Errorf("writing past the length: got %v, want http.ErrContentLength", writeErr)
	}
}

// readRawAnswer reads an answer with a Content-Length off r, as sent.
func readRawAnswer(t *testing.T, r *bufio.Reader) []byte {
	t.Helper()
	var raw []byte
	length := 0
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading an answer: %v", err)
		}
		raw = append(raw, line...)
		if v, ok := strings.CutPrefix(line, "Content-Length: "); ok {
			fmt.Sscan(v, &length)
		}
		if line == "\r\n" {
			break
		}
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatalf("reading an answer's body: %v", err)
	}
	return append(raw, body...)
}

// matchDate reports whether got is want with its "Date: *" a date.
func matchDate(got, want string) bool {
	before, after, ok := strings.Cut(want, "Date: *")
	if !ok {
		return got == want
	}
	date := got[min(len(before), len(got)):]
	date, rest, _ := strings.Cut(date, "\r\n")
	_, err := time.Parse(http.TimeFormat, strings.TrimPrefix(date, "Date: "))
	return strings.HasPrefix(got, before) && err == nil && "\r\n"+rest == after
}

func TestFastPathPanics(t *testing.T) {
	s := startFast(t, "/webhook/card", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header()["Content-Length"] = []string{"2"}
		io.WriteString(w, "ha") // written, not sent: a panic sends nothing more
		if string(b) == "abort" {
			panic(http.ErrAbortHandler)
		}
		panic("the handler's bug")
	}), nil, nil)
	for _, tc := range []struct{ body, log string }{
		{"bug", `msg="panic serving a callback"`},
		{"abort", ""},
	} {
		before := len(s.logs.String())
		conn, r := s.dial(t)
		io.WriteString(conn, click(tc.body))
		wantClosed(t, r)
		logs := s.logs.String()[before:]
		if tc.log != "" && (!strings.Contains(logs, tc.log) || !strings.Contains(logs, "the handler's bug") || !strings.Contains(logs, "goroutine")) {
			t.Errorf("%s: the panic, its value and its stack are not in the log:\n%s", tc.body, logs)
		}
		if tc.log == "" && logs != "" {
			t.Errorf("%s: logged %s, want nothing for http.ErrAbortHandler", tc.body, logs)
		}
	}
}

// gated answers a callback once released, telling started when it begins.
type gated struct {
	started, release chan struct{}
}

func newGated() *gated { return &gated{make(chan struct{}, 10), make(chan struct{})} }

func (g *gated) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.ReadAll(r.Body)
	g.started <- struct{}{}
	<-g.release
	w.Header()["Content-Length"] = []string{"4"}
	io.WriteString(w, "done")
}

func TestFastPathShutdown(t *testing.T) {
	t.Run("idle connections are closed, busy ones finish their answer", func(t *testing.T) {
		g := newGated()
		s := startFast(t, "/webhook/card", g, nil, nil)
		idle, idleR := s.dial(t)
		io.WriteString(idle, click("x"))
		go func() { <-g.started; g.release <- struct{}{} }()
		readAnswer(t, idleR)
		_, silentR := s.dial(t) // connected, nothing sent
		busy, busyR := s.dial(t)
		io.WriteString(busy, click("y"))
		<-g.started

		shut := make(chan error, 1)
		go func() { shut <- s.fp.shutdown(context.Background()) }()
		wantClosed(t, idleR)
		wantClosed(t, silentR)
		select {
		case err := <-shut:
			t.Fatalf("shutdown returned (%v) while a request was being answered", err)
		default:
		}
		close(g.release)
		res, body := readAnswer(t, busyR)
		if res.StatusCode != 200 || body != "done" || !res.Close {
			t.Errorf("got %d %q, Connection %q; want 200 done and close", res.StatusCode, body, res.Header.Get("Connection"))
		}
		wantClosed(t, busyR)
		if err := <-shut; err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if _, err := net.Dial("tcp", s.addr); err == nil {
			t.Error("still accepting connections after shutdown")
		}
	})
	t.Run("what is still busy at the deadline is closed", func(t *testing.T) {
		g := newGated()
		s := startFast(t, "/webhook/card", g, nil, nil)
		defer close(g.release)
		busy, busyR := s.dial(t)
		io.WriteString(busy, click("y"))
		<-g.started
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		done := make(chan error, 1)
		go func() { done <- s.fp.shutdown(ctx) }()
		wantClosed(t, busyR)
		g.release <- struct{}{} // the handler ends; its answer goes nowhere
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("shutdown: got %v, want the deadline's error", err)
		}
	})
}

// TestConnContextEndsWhenTheClientLeaves: a fast connection's context is
// found ended, once asked, after the client has closed its side, and not
// before; and it ends with the connection.
func TestConnContextEndsWhenTheClientLeaves(t *testing.T) {
	client, server := acceptedPair(t, func(ln net.Listener) net.Listener { return ln })
	base, cancel := context.WithCancel(context.Background())
	ctx := &connContext{Context: base, cancel: cancel, conn: server}
	if err := ctx.Err(); err != nil {
		t.Fatalf("ended while the client is there: %v", err)
	}
	io.WriteString(client, "next request") // waiting data is not an end
	waitReadable(t, server)
	if err := ctx.Err(); err != nil {
		t.Fatalf("ended while the client is there, data waiting: %v", err)
	}
	client.Close()
	buf := make([]byte, len("next request"))
	io.ReadFull(server, buf)
	waitReadable(t, server) // the end of the stream has arrived
	if err := ctx.Err(); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v once the client left, want context.Canceled", err)
	}
	select {
	case <-ctx.Done():
	default:
		t.Error("Err reports the end, Done is not closed")
	}

	// The connection's end ends it too.
	base, cancel = context.WithCancel(context.Background())
	ctx = &connContext{Context: base, cancel: cancel, conn: server}
	cancel()
	if ctx.Err() == nil {
		t.Error("the connection's end did not end the context")
	}
}

// waitReadable waits until c has something to read, or its end.
func waitReadable(t *testing.T, c net.Conn) {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second)) // a safety net
	defer c.SetReadDeadline(time.Time{})
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN
	})
	if err != nil {
		t.Fatal(err)
	}
}

type temporary struct{}

func (temporary) Error() string   { return "too many open files" }
func (temporary) Timeout() bool   { return false }
func (temporary) Temporary() bool { return true }

// TestFastPathAcceptErrors: a temporary failure to accept is waited out,
// and a lasting one ends net/http's Serve with it, as it would without
// the fast path.
func TestFastPathAcceptErrors(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	permanent := errors.New("the listener broke")
	calls := 0
	ln := acceptFunc(func() (net.Conn, error) {
		calls++
		switch calls {
		case 1:
			return nil, temporary{}
		case 2:
			return server, nil
		}
		return nil, permanent
	})
	srv := &http.Server{Handler: probe}
	logs := &syncBuffer{}
	fp := newFastPath(ln, "/webhook/card", srv, slog.New(slog.NewTextHandler(logs, nil)))
	served := make(chan error, 1)
	go fp.serve()
	go func() { served <- srv.Serve(fp) }()
	client.SetDeadline(time.Now().Add(30 * time.Second)) // a safety net
	io.WriteString(client, click("a"))
	if _, got := readAnswer(t, bufio.NewReader(client)); !strings.HasPrefix(got, "fast=true") {
		t.Errorf("got %s, want the fast path's answer", got)
	}
	if err := <-served; err != permanent {
		t.Errorf("Serve returned %v, want the listener's error", err)
	}
	if !strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the temporary failure is not logged:\n%s", logs)
	}
}

// acceptFunc is a listener whose Accept is a function.
type acceptFunc func() (net.Conn, error)

func (f acceptFunc) Accept() (net.Conn, error) { return f() }
func (f acceptFunc) Close() error              { return nil }
func (f acceptFunc) Addr() net.Addr            { return &net.TCPAddr{} }

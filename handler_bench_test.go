package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"
)

// benchEnv is a server as run builds it, with the built-in logic and the
// program's logger writing to a sink that discards its batches: the
// benchmarks measure the work a click really costs, its log lines included.
func benchEnv(b *testing.B, opts ...func(*config)) *testEnv {
	cfg := baseConfig()
	for _, o := range opts {
		o(cfg)
	}
	st := newMemStore()
	log := newLogger("text", newLogSink(io.Discard))
	rn := newRunner(st, logOnly(log), log,
		runnerConfig{respondWithin: cfg.respondWithin, logicTimeout: cfg.logicTimeout}, nil)
	b.Cleanup(func() { rn.shutdown(context.Background()) })
	return &testEnv{cfg: cfg, store: st, runner: rn, logs: &syncBuffer{},
		handler: newServer(log, cfg, st, rn, nil, rn.metrics), signer: newSigner(cfg.verificationToken, cfg.encryptKey)}
}

// benchRequests builds n signed clicks on messages prefix0…prefixN-1.
func benchRequests(e *testEnv, g Generation, prefix string, n int) []platformRequest {
	reqs := make([]platformRequest, n)
	for i := range reqs {
		reqs[i] = e.request(g, testClick(prefix+strconv.Itoa(i)))
	}
	return reqs
}

// benchWriter is the least a ResponseWriter can be, so that a benchmark
// measures the handler and not a recorder: its header map is reused and
// the body is kept for checking.
type benchWriter struct {
	h    http.Header
	code int
	body []byte
}

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *benchWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, p...)
	return len(p), nil
}

func (w *benchWriter) Flush() {}

// benchServer hands prepared requests to a handler the way net/http does,
// reusing one request and one writer.
type benchServer struct {
	h    http.Handler
	req  *http.Request
	body bytes.Reader
	w    benchWriter
}

func newBenchServer(h http.Handler, path string) *benchServer {
	s := &benchServer{h: h, w: benchWriter{h: http.Header{}}}
	s.req = &http.Request{Method: "POST", URL: &url.URL{Path: path}, RequestURI: path,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Host: "127.0.0.1", Body: io.NopCloser(&s.body)}
	return s
}

// serve sends r and fails the benchmark unless the answer is 200 with the
// body want.
func (s *benchServer) serve(b *testing.B, r platformRequest, want []byte) {
	s.body.Reset(r.Body)
	s.req.Header, s.req.ContentLength = r.Header, int64(len(r.Body))
	clear(s.w.h)
	s.w.code, s.w.body = 0, s.w.body[:0]
	s.h.ServeHTTP(&s.w, s.req)
	if s.w.code != http.StatusOK || !bytes.Equal(s.w.body, want) {
		b.Fatalf("got %d %s, want 200 %s", s.w.code, s.w.body, want)
	}
}

// BenchmarkCallback measures each callback path through the handler, with
// 2 KB cards in the in-memory store, checking every answer. A first click
// is a new message each time; the store is refilled out of the timer when
// the prepared clicks run out.
func BenchmarkCallback(b *testing.B) {
	const pool = 5000
	card := card2K(0)
	done := renderDone(card) // as PUT /cards renders it
	for _, tc := range []struct {
		name   string
		gen    Generation
		opts   []func(*config)
		repeat bool
	}{
		{"legacy-first", Legacy, nil, false},
		{"legacy-repeat", Legacy, nil, true},
		{"new-first", New, nil, false},
		{"new-encrypted-first", New, []func(*config){withKey}, false},
		{"new-encrypted-repeat", New, []func(*config){withKey}, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := benchEnv(b, tc.opts...)
			reqs := benchRequests(e, tc.gen, "om_", pool)
			s := newBenchServer(e.handler, e.cfg.path)
			want := answer(tc.gen, &toastDone, done).bytes()
			if tc.repeat && tc.gen == New {
				want = answer(tc.gen, &toastRepeat, done).bytes()
			}
			fill := func() {
				for i := range pool {
					e.store.Update("om_"+strconv.Itoa(i), func(cur *Record) *Record { return cur.withCard(card, done, nil, time.Now()) })
				}
				if tc.repeat {
					for _, r := range reqs {
						s.serve(b, r, answer(tc.gen, &toastDone, done).bytes())
					}
				}
			}
			fill()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == pool {
					b.StopTimer()
					if !tc.repeat {
						for n := range pool {
							e.store.Update("om_"+strconv.Itoa(n), func(*Record) *Record { return nil })
						}
						fill()
					}
					i = 0
					b.StartTimer()
				}
				s.serve(b, reqs[i], want)
				i++
			}
		})
	}
	b.Run("challenge", func(b *testing.B) {
		e := benchEnv(b)
		r := platformRequest{Body: challengeBody("5634b122-c042-4634-bc7f-b07a3c3e77ad", testToken), Header: http.Header{}}
		s := newBenchServer(e.handler, e.cfg.path)
		want := []byte(`{"challenge":"5634b122-c042-4634-bc7f-b07a3c3e77ad"}`)
		b.ReportAllocs()
		for b.Loop() {
			s.serve(b, r, want)
		}
	})
}

// BenchmarkFastPath measures a callback through the fast path's
// connection loop and the handler: the request read off a connection,
// its head read, the answer written back, in process. The connection
// feeds the same request again each time the loop asks for more, and
// every answer is checked: 200, the card, and the first answer's length.
func BenchmarkFastPath(b *testing.B) {
	e := benchEnv(b)
	card := card2K(0)
	e.store.Update("om_1", func(cur *Record) *Record { return cur.withCard(card, renderDone(card), nil, time.Now()) })
	repeat := e.request(Legacy, testClick("om_1"))
	benchServer := newBenchServer(e.handler, e.cfg.path)
	benchServer.serve(b, repeat, answer(Legacy, &toastDone, renderDone(card)).bytes()) // the first click
	for _, tc := range []struct {
		name string
		r    platformRequest
		want []byte
	}{
		{"legacy-repeat", repeat, answer(Legacy, &toastRepeat, renderDone(card)).bytes()},
		{"challenge", platformRequest{Body: challengeBody("5634b122-c042-4634-bc7f-b07a3c3e77ad", testToken), Header: http.Header{}},
			[]byte(`{"challenge":"5634b122-c042-4634-bc7f-b07a3c3e77ad"}`)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			req, _ := http.NewRequest("POST", "http://cb"+e.cfg.path, bytes.NewReader(tc.r.Body))
			req.Header = tc.r.Header.Clone()
			req.Header.Set("X-Request-Id", "bench-1") // a constant id: answers of one length
			var raw bytes.Buffer
			req.Write(&raw)
			conn := &loopConn{b: b, req: raw.Bytes(), want: tc.want}
			fp := newFastPath(nil, e.cfg.path, &http.Server{Handler: e.handler}, slog.New(slog.DiscardHandler))
			c := newFastConn(fp, conn)
			fp.wg.Add(1)
			b.ReportAllocs()
			c.serve() // until loopConn says the loop is done
			if conn.answers == 0 {
				b.Fatal("no answer")
			}
		})
	}
}

// loopConn is a connection that sends its request again whenever it is
// read, as long as b.Loop goes on, and checks each answer written to it.
type loopConn struct {
	net.Conn
	b       *testing.B
	req     []byte
	want    []byte // the answer's body
	length  int    // the first answer's length
	answers int
}

func (c *loopConn) Read(p []byte) (int, error) {
	if !c.b.Loop() {
		return 0, io.EOF
	}
	return copy(p, c.req), nil
}

func (c *loopConn) Write(p []byte) (int, error) {
	if c.length == 0 {
		c.length = len(p)
	}
	if !bytes.HasPrefix(p, []byte("HTTP/1.1 200 OK\r\n")) || !bytes.HasSuffix(p, c.want) || len(p) != c.length {
		c.b.Fatalf("answer %d: got %q, want 200 ending in %s, %d bytes", c.answers, p, c.want, c.length)
	}
	c.answers++
	return len(p), nil
}

func (c *loopConn) Close() error         { return nil }
func (c *loopConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }

package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

const fastLine = "POST /webhook/card HTTP/1.1\r\n"

// parseHead reads a head that is all in b (see headReader.read).
func parseHead(b, line []byte, limit int) (fastHead, headVerdict) {
	var r headReader
	v := r.read(b, line, limit)
	return r.h, v
}

// headCases are the rows of TestParseHead, and FuzzFastHead's seeds.
var headCases = []struct {
	name string
	in   string
	want headVerdict
}{
	{"plain", "POST /webhook/card HTTP/1.1\r\nHost: cb.example.com\r\nContent-Length: 2\r\nX-Lark-Signature: abc\r\n\r\n{}", headFast},
	{"names in lower case, as proxies send them", "POST /webhook/card HTTP/1.1\r\nhost: cb\r\ncontent-length: 2\r\nx-lark-signature: abc\r\nx-lark-request-nonce: n\r\n\r\n{}", headFast},
	{"spaces and tabs around values", "POST /webhook/card HTTP/1.1\r\nHost:  cb \t\r\nContent-Length:\t2 \r\nX-Lark-Signature:   a b  \r\n\r\n{}", headFast},
	{"empty values and other headers", "POST /webhook/card HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\nAccept-Encoding: gzip\r\nContent-Length: 0\r\nX-Request-Id:\r\n\r\n", headFast},
	{"the first of repeated values", "POST /webhook/card HTTP/1.1\r\nHost: cb\r\nX-Lark-Signature: first\r\nx-lark-signature: second\r\nContent-Length: 2\r\n\r\n{}", headFast},
	{"every callback header", "POST /webhook/card HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 2\r\nX-Lark-Request-Timestamp: 1700000000\r\nX-Lark-Request-Nonce: n-1\r\nX-Lark-Signature: 0f\r\nX-Request-Id: req-1\r\nX-Tt-Logid: log-1\r\n\r\n{}", headFast},
	{"obs-text in a value", "POST /webhook/card HTTP/1.1\r\nHost: cb\r\nX-Note: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\n{}", headFast},
	{"Connection: close", "POST /webhook/card HTTP/1.1\r\nHost: cb\r\nConnection: Close\r\nContent-Length: 2\r\n\r\n{}", headFast},
	{"Connection: keep-alive", "POST /webhook/card HTTP/1.1\r\nHost: cb\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}", headFast},
	{"leading zeros in the length", "POST /webhook/card HTTP/1.1\r\nHost: cb\r\nContent-Length: 002\r\n\r\n{}", headFast},
	{"a pipelined request after the body", "POST /webhook/card HTTP/1.1\r\nHost: cb\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\nHost: cb\r\n\r\n", headFast},

	{"nothing yet", "", headMore},
	{"part of the request line", "POST /webhook/ca", headMore},
	{"the request line only", fastLine, headMore},
	{"part of a header", fastLine + "Host: cb\r\nContent-Len", headMore},
	{"a CR without its LF yet", fastLine + "Host: cb\r\nContent-Length: 2\r", headMore},
	{"no blank line yet", fastLine + "Host: cb\r\nContent-Length: 2\r\n", headMore},

	{"another method", "GET /webhook/card HTTP/1.1\r\nHost: cb\r\n\r\n", headRoute},
	{"another method, from its first byte", "G", headRoute},
	{"another path", "POST /healthz HTTP/1.1\r\nHost: cb\r\n\r\n", headRoute},
	{"a longer path", "POST /webhook/cards HTTP/1.1\r\n", headRoute},
	{"a query", "POST /webhook/card?x=1 HTTP/1.1\r\n", headRoute},
	{"an escaped path", "POST /webhook/c%61rd HTTP/1.1\r\n", headRoute},
	{"an absolute URL", "POST http://cb/webhook/card HTTP/1.1\r\n", headRoute},
	{"HTTP/1.0", "POST /webhook/card HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", headRoute},
	{"lower-case method", "post /webhook/card HTTP/1.1\r\n", headRoute},
	{"a bare LF after the request line", "POST /webhook/card HTTP/1.1\n", headRoute},

	{"a bare LF", fastLine + "Host: cb\nContent-Length: 2\r\n\r\n{}", headOther},
	{"a bare LF ends the head", fastLine + "Host: cb\r\nContent-Length: 2\r\n\n{}", headOther},
	{"a folded line", fastLine + "Host: cb\r\nX-Lark-Signature: a\r\n b\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"a space before the colon", fastLine + "Host: cb\r\nContent-Length : 2\r\n\r\n{}", headOther},
	{"no colon", fastLine + "Host: cb\r\nContent-Length 2\r\n\r\n{}", headOther},
	{"an empty name", fastLine + "Host: cb\r\n: x\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"a name that is not a token", fastLine + "Host: cb\r\nX(y): 1\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"a control byte in a value", fastLine + "Host: cb\r\nX-Lark-Signature: a\x00b\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"a CR in a value", fastLine + "Host: cb\r\nX-Lark-Signature: a\rb\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"DEL in a value", fastLine + "Host: cb\r\nX-A: \x7f\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"no Content-Length", fastLine + "Host: cb\r\n\r\n", headOther},
	{"two Content-Lengths", fastLine + "Host: cb\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"a list of lengths", fastLine + "Host: cb\r\nContent-Length: 2, 2\r\n\r\n{}", headOther},
	{"a signed length", fastLine + "Host: cb\r\nContent-Length: +2\r\n\r\n{}", headOther},
	{"an empty length", fastLine + "Host: cb\r\nContent-Length: \r\n\r\n", headOther},
	{"a length of eight digits", fastLine + "Host: cb\r\nContent-Length: 00000002\r\n\r\n{}", headOther},
	{"Transfer-Encoding", fastLine + "Host: cb\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", headOther},
	{"Transfer-Encoding with a length", fastLine + "Host: cb\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}", headOther},
	{"Expect", fastLine + "Host: cb\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"Upgrade", fastLine + "Host: cb\r\nUpgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"another Connection", fastLine + "Host: cb\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"a Connection that folds to close in Unicode only", fastLine + "Host: cb\r\nConnection: clo\xc5\xbfe\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"no Host", fastLine + "Content-Length: 2\r\n\r\n{}", headOther},
	{"two Hosts", fastLine + "Host: a\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}", headOther},
	{"a Host with a path", fastLine + "Host: cb/x\r\nContent-Length: 2\r\n\r\n{}", headOther},

	{"a body past the read size", fastLine + "Host: cb\r\nContent-Length: 16384\r\n\r\n", headSize},
	{"a length past the largest body", fastLine + "Host: cb\r\nContent-Length: 9999999\r\n\r\n", headSize},
}

func TestParseHead(t *testing.T) {
	for _, tc := range headCases {
		t.Run(tc.name, func(t *testing.T) {
			if _, v := parseHead([]byte(tc.in), []byte(fastLine), fastReadSize); v != tc.want {
				t.Errorf("got %v, want %v", v, tc.want)
			}
		})
	}
	t.Run("what it reads", func(t *testing.T) {
		in := "POST /webhook/card HTTP/1.1\r\nhost: cb:443\r\nConnection: close\r\nContent-Length: 2\r\nX-Lark-Signature: first \r\nX-Lark-Signature: second\r\nx-tt-logid: log-1\r\n\r\n{}next"
		h, v := parseHead([]byte(in), []byte(fastLine), fastReadSize)
		if v != headFast {
			t.Fatalf("got %v, want fast", v)
		}
		val := func(at fieldAt) string { return in[at.start:at.end] }
		if h.n != len(in)-len("{}next") || h.contentLength != 2 || !h.close || val(h.host) != "cb:443" {
			t.Errorf("got head %d bytes, length %d, close %v, host %q; want %d, 2, true, cb:443", h.n, h.contentLength, h.close, val(h.host), len(in)-len("{}next"))
		}
		want := map[string]string{"X-Lark-Signature": "first", "X-Tt-Logid": "log-1"}
		for i, name := range callbackHeaders {
			got, ok := val(h.vals[i]), h.vals[i].set
			if w, wok := want[name]; got != w || ok != wok {
				t.Errorf("%s: got %q (present %v), want %q (present %v)", name, got, ok, w, wok)
			}
		}
	})
	t.Run("a head that fills the read size", func(t *testing.T) {
		in := fastLine + "Host: cb\r\nX-Pad: " + strings.Repeat("x", fastReadSize) + "\r\n\r\n"
		for _, n := range []int{fastReadSize, len(in)} {
			if _, v := parseHead([]byte(in[:n]), []byte(fastLine), fastReadSize); v != headSize {
				t.Errorf("%d bytes: got %v, want size", n, v)
			}
		}
	})
}

// FuzzFastHead checks the fast path's reader against net/http's: every
// request parseHead takes, a net/http server reads as the same request —
// the same headers the callback route reads, the same Host, the same
// Connection, the same body and so the same end — and from bytes it still
// waits on, net/http serves no request either. So the fast path is never
// more lenient than net/http, and both agree where each request ends:
// nothing can be smuggled past one in the other's reading.
func FuzzFastHead(f *testing.F) {
	for _, tc := range headCases {
		f.Add([]byte(tc.in))
	}
	ref := startReferenceServer(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		h, v := parseHead(in, []byte(fastLine), fastReadSize)
		checkPieces(t, in, h, v)
		if v == headFast && len(in) < h.n+h.contentLength {
			v = headMore // its body is not all in: a server would wait for it
		}
		if v != headFast && v != headMore {
			return // net/http's to answer, whatever it makes of it
		}
		got := ref.serve(t, in)
		if v == headMore {
			if got != nil {
				t.Fatalf("the fast path waits for more of %q, net/http served it: %+v", in, got)
			}
			return
		}
		if got == nil {
			t.Fatalf("the fast path takes %q, net/http refused it", in)
		}
		val := func(at fieldAt) string { return string(in[at.start:at.end]) }
		want := seenRequest{
			method: "POST", uri: "/webhook/card", proto: "HTTP/1.1", host: val(h.host),
			length: int64(h.contentLength), close: h.close, body: string(in[h.n : h.n+h.contentLength]),
		}
		for i, at := range h.vals {
			if at.set {
				want.headers[i] = val(at) + "|"
			}
		}
		if *got != want {
			t.Fatalf("%q:\nnet/http read %+v\nthe fast path %+v", in, *got, want)
		}
	})
}

// checkPieces checks that a headReader fed in a byte at a time, as a
// slow client sends it, stops where and as parseHead does on the bytes
// it had by then, and that it ends as parseHead does on all of in (h, v).
func checkPieces(t *testing.T, in []byte, h fastHead, v headVerdict) {
	t.Helper()
	var r headReader
	for k := 1; k <= len(in); k++ {
		got := r.read(in[:k], []byte(fastLine), fastReadSize)
		if got == headMore {
			continue
		}
		wantH, want := parseHead(in[:k], []byte(fastLine), fastReadSize)
		if got != want || r.h != wantH {
			t.Fatalf("%q a byte at a time: %v %+v after %d bytes, want %v %+v", in, got, r.h, k, want, wantH)
		}
		return
	}
	if len(in) > 0 && (v != headMore || r.h != h) {
		t.Fatalf("%q a byte at a time: still reading, want %v %+v", in, v, h)
	}
}

// seenRequest is what a server read of a request, as FuzzFastHead
// compares it.
type seenRequest struct {
	method, uri, proto, host string
	length                   int64
	close                    bool
	body                     string
	// headers are the first values of callbackHeaders, each with a "|"
	// after it when it was there at all.
	headers [len(callbackHeaders)]string
}

// referenceServer is net/http's server reading requests from a loopback
// connection.
type referenceServer struct {
	addr string
	mu   sync.Mutex
	seen *seenRequest // the first request of the connection being tried
}

func startReferenceServer(tb testing.TB) *referenceServer {
	ref := &referenceServer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ref.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		s := &seenRequest{method: r.Method, uri: r.RequestURI, proto: r.Proto, host: r.Host, length: r.ContentLength, close: r.Close, body: string(body)}
		for i, name := range callbackHeaders {
			if v := r.Header[name]; len(v) > 0 {
				s.headers[i] = v[0] + "|"
			}
		}
		ref.mu.Lock()
		if ref.seen == nil {
			ref.seen = s
		}
		ref.mu.Unlock()
	})}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return ref
}

// serve sends in on a new connection, then ends the connection's sending
// side, and returns the first request the server read, if any, once the
// server has closed the connection.
func (ref *referenceServer) serve(t *testing.T, in []byte) *seenRequest {
	ref.mu.Lock()
	ref.seen = nil
	ref.mu.Unlock()
	conn, err := net.Dial("tcp", ref.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second)) // a safety net
	go func() {
		conn.Write(in)
		conn.(*net.TCPConn).CloseWrite()
	}()
	// The server may reset the connection, closing it with bytes unread.
	var ne net.Error
	if _, err := io.Copy(io.Discard, bufio.NewReader(conn)); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server did not close the connection")
	}
	ref.mu.Lock()
	defer ref.mu.Unlock()
	return ref.seen
}

// BenchmarkReadHeadByteAtATime reads a 16 KB head that arrives a byte
// at a time: its cost grows with the head, not with its square.
func BenchmarkReadHeadByteAtATime(b *testing.B) {
	in := []byte(fastLine + "Host: cb\r\nX-Pad: " + strings.Repeat("x", 8<<10) + "\r\n" + strings.Repeat("X-A: b\r\n", 900) + "Content-Length: 0\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		var r headReader
		v := headMore
		for k := 1; v == headMore; k++ {
			v = r.read(in[:k], []byte(fastLine), fastReadSize)
		}
		if v != headFast {
			b.Fatal(v)
		}
	}
}

// BenchmarkParseHead reads the head of a legacy click as the platform
// sends it.
func BenchmarkParseHead(b *testing.B) {
	in := []byte("POST /webhook/card HTTP/1.1\r\nHost: cb.example.com\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 230\r\nContent-Type: application/json; charset=utf-8\r\n" +
		"X-Lark-Request-Nonce: 1234567890\r\nX-Lark-Request-Timestamp: 1700000000\r\nX-Lark-Signature: 0123456789abcdef0123456789abcdef01234567\r\nX-Request-Id: 20261207211330-abcdef\r\nAccept-Encoding: gzip\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, v := parseHead(in, []byte(fastLine), fastReadSize); v != headMore && v != headFast {
			b.Fatal(v)
		}
	}
}

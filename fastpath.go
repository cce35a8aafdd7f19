package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fastPath serves the card request URL's clicks itself, and every other
// request through net/http.
//
// net/http spends more on a request than a click's own work costs: it
// reads every header into a map, starts a goroutine per request whose
// read in the background notices a client that goes away, and wakes and
// stops it again before the next request. On one core of this project's
// benchmark machine a bare net/http handler answering a fixed 2 KB card
// managed about 80,000 requests a second, and a loop that reads requests
// off the connection and writes the same card about 200,000. The platform
// sends one shape of request, POST {path} with a Content-Length, over
// connections it keeps alive (so do Caddy and nginx as configured in
// deploy/): the fast path reads that shape off the connection, and at the
// first request of any other shape hands the connection to net/http,
// which serves it from that request's first byte on, as if it had
// accepted it. headReader decides, and takes only what net/http would
// read the same way.
//
// A fast connection keeps net/http's behaviour where a user sees it: the
// same handler answers; the server's ConnState hook hears of it as of
// net/http's own (so connTimeouts times it); a panic in the handler is
// logged and closes the connection; Connection: close is honoured both
// ways; shutdown closes idle connections and waits for busy ones. The
// request's context ends when the connection does, and is found ended
// once the client has closed its side (see peerGone), which is what the
// runner asks of it after a click's logic.
//
// fastPath is the net.Listener that net/http's server serves: it yields
// the connections handed over.
type fastPath struct {
	ln        net.Listener
	h         http.Handler
	connState func(net.Conn, http.ConnState)
	log       *slog.Logger
	path      string
	line      []byte // the request line served: "POST {path} HTTP/1.1\r\n"
	handoff   chan handoff
	// handedOff counts connections handed to net/http, by the verdict on
	// the request they were handed over at. Accept calls it before net/http
	// has the connection, so it has counted before net/http answers.
	handedOff func(headVerdict)
	dates     dateCache

	closeOnce sync.Once
	closed    chan struct{}
	acceptErr error // why accepting stopped, other than Close; set before closed is

	mu       sync.Mutex
	conns    map[*fastConn]struct{}
	stopping atomic.Bool
	wg       sync.WaitGroup // connections being served
}

// fastReadSize is the most of a request, head and body, the fast path
// reads at once; a larger request goes to net/http. A click's body is a
// few KB, its head under one.
const fastReadSize = 16 << 10

// newFastPath serves path's callbacks from the connections ln accepts
// with srv's handler, telling srv's ConnState hook about them, and hands
// srv the rest when srv serves the fastPath as its listener.
func newFastPath(ln net.Listener, path string, srv *http.Server, log *slog.Logger) *fastPath {
	state := srv.ConnState
	if state == nil {
		state = func(net.Conn, http.ConnState) {}
	}
	return &fastPath{
		ln: ln, h: srv.Handler, connState: state, log: log, path: path,
		line:      []byte("POST " + path + " HTTP/1.1\r\n"),
		handoff:   make(chan handoff),
		handedOff: func(headVerdict) {},
		closed:    make(chan struct{}),
		conns:     make(map[*fastConn]struct{}),
	}
}

// Accept yields the next connection handed to net/http.
func (fp *fastPath) Accept() (net.Conn, error) {
	select {
	case h := <-fp.handoff:
		fp.handedOff(h.verdict)
		return h.conn, nil
	case <-fp.closed:
		if fp.acceptErr != nil {
			return nil, fp.acceptErr
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting connections.
func (fp *fastPath) Close() error {
	var err error
	fp.closeOnce.Do(func() {
		err = fp.ln.Close()
		close(fp.closed)
	})
	return err
}

func (fp *fastPath) Addr() net.Addr { return fp.ln.Addr() }

// serve accepts connections and serves each on its own goroutine until
// the listener is closed or fails. Like net/http, it rides out a
// temporary failure (too many open files, say) by trying again after a
// pause that doubles up to a second.
func (fp *fastPath) serve() {
	var pause time.Duration
	for {
		nc, err := fp.ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Temporary() && !errors.Is(err, net.ErrClosed) {
				pause = min(max(2*pause, 5*time.Millisecond), time.Second)
				fp.log.Warn("accepting a connection failed; trying again", "err", err, "pause", pause)
				select {
				case <-time.After(pause):
					continue
				case <-fp.closed:
					return
				}
			}
			fp.closeOnce.Do(func() {
				fp.acceptErr = err
				close(fp.closed)
			})
			return
		}
		pause = 0
		c := newFastConn(fp, nc)
		fp.mu.Lock()
		if fp.stopping.Load() {
			fp.mu.Unlock()
			nc.Close()
			c.release()
			continue
		}
		fp.conns[c] = struct{}{}
		fp.wg.Add(1)
		fp.mu.Unlock()
		fp.connState(nc, http.StateNew)
		go c.serve()
	}
}

// shutdown stops accepting, closes the idle connections and waits for the
// others to finish the request they are serving, until ctx ends; then it
// closes what is left.
func (fp *fastPath) shutdown(ctx context.Context) error {
	fp.Close()
	fp.mu.Lock()
	fp.stopping.Store(true)
	for c := range fp.conns {
		if c.state.Load() != connBusy {
			c.nc.Close()
		}
	}
	fp.mu.Unlock()
	done := waitDone(&fp.wg)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	fp.mu.Lock()
	for c := range fp.conns {
		c.nc.Close()
	}
	fp.mu.Unlock()
	<-done
	return fmt.Errorf("callback connections still busy at the end of the shutdown timeout were closed: %w", ctx.Err())
}

// A fast connection's state, for shutdown: it closes the connections that
// are not busy with a request.
const (
	connNew  int32 = iota // nothing read yet
	connBusy              // a request is arriving or being answered
	connIdle              // between requests
)

// fastConn is one connection on the fast path, with what serving its
// requests one after another reuses.
type fastConn struct {
	fp    *fastPath
	nc    net.Conn
	br    *bufio.Reader
	w     fastWriter
	ctx   *connContext
	req   *http.Request
	hdr   http.Header
	vals  [len(callbackHeaders)][1]string // hdr's values
	body  bodyReader
	state atomic.Int32
}

// fastBuffers holds the buffers of connections that have ended, as
// net/http keeps its own: a client that does not keep its connections
// alive would otherwise cost 20 KB a request.
var fastBuffers = sync.Pool{New: func() any {
	return &fastBuffer{bufio.NewReaderSize(nil, fastReadSize), bufio.NewWriterSize(nil, 4<<10)}
}}

type fastBuffer struct {
	r *bufio.Reader
	w *bufio.Writer
}

func newFastConn(fp *fastPath, nc net.Conn) *fastConn {
	buf := fastBuffers.Get().(*fastBuffer)
	buf.r.Reset(nc)
	buf.w.Reset(nc)
	c := &fastConn{fp: fp, nc: nc, br: buf.r, hdr: make(http.Header, len(callbackHeaders))}
	c.w = fastWriter{bw: buf.w, h: make(http.Header), dates: &fp.dates, stopping: &fp.stopping}
	base, cancel := context.WithCancel(context.Background())
	c.ctx = &connContext{Context: base, cancel: cancel, conn: nc}
	c.req = (&http.Request{
		Method: http.MethodPost, URL: &url.URL{Path: fp.path}, RequestURI: fp.path,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, RemoteAddr: nc.RemoteAddr().String(),
		Header: c.hdr, Body: &c.body,
	}).WithContext(c.ctx)
	return c
}

// release gives the connection's buffers back, once nothing reads or
// writes through them: not for a connection handed to net/http, which
// reads through its reader.
func (c *fastConn) release() {
	c.br.Reset(nil)
	c.w.bw.Reset(nil)
	fastBuffers.Put(&fastBuffer{c.br, c.w.bw})
}

// serve serves the connection's requests until it closes, fails, asks to
// close, or sends one the fast path leaves to net/http.
func (c *fastConn) serve() {
	handedOff := false
	defer func() {
		c.ctx.cancel()
		c.fp.mu.Lock()
		delete(c.fp.conns, c)
		c.fp.mu.Unlock()
		if !handedOff {
			c.nc.Close()
			c.fp.connState(c.nc, http.StateClosed)
			c.release()
		}
		c.fp.wg.Done()
	}()
	for {
		h, v, err := c.readHead()
		if err != nil {
			return // closed, or cut off by its time limit
		}
		if v != headFast {
			handedOff = c.handOff(v)
			return
		}
		c.fp.connState(c.nc, http.StateActive)
		all, err := c.br.Peek(h.n + h.contentLength)
		if err != nil {
			return
		}
		keep, aborted := c.serveOne(&h, all)
		if aborted {
			return // nothing more is sent, as net/http sends nothing more
		}
		c.br.Discard(len(all))
		if c.w.bw.Flush() != nil || !keep {
			return
		}
		c.state.Store(connIdle)
		if c.fp.stopping.Load() {
			// shutdown began after the check above, and may have found
			// the connection busy: it would wait for a request that is
			// not coming.
			return
		}
		c.fp.connState(c.nc, http.StateIdle)
	}
}

// readHead reads until the head of the next request is in, or until
// headReader can tell that the request is not the fast path's.
func (c *fastConn) readHead() (fastHead, headVerdict, error) {
	var r headReader
	for {
		b, _ := c.br.Peek(c.br.Buffered())
		if len(b) > 0 && c.state.Load() != connBusy {
			c.state.Store(connBusy)
		}
		if v := r.read(b, c.fp.line, fastReadSize); v != headMore {
			return r.h, v, nil
		}
		if _, err := c.br.Peek(len(b) + 1); err != nil {
			return r.h, headMore, err
		}
	}
}

// handOff gives the connection, and the bytes read from it, to net/http;
// it reports false if the server no longer accepts.
func (c *fastConn) handOff(v headVerdict) bool {
	select {
	case c.fp.handoff <- handoff{&handedConn{c.nc, c.br}, v}:
		return true
	case <-c.fp.closed:
		return false
	}
}

// serveOne answers the request whose head h and body are in all, and
// reports whether the connection can carry another, or whether the
// handler panicked.
func (c *fastConn) serveOne(h *fastHead, all []byte) (keep, aborted bool) {
	// One string holds every value the handler reads, Host first.
	n := h.host.end - h.host.start
	for _, at := range h.vals {
		n += at.end - at.start
	}
	var sb strings.Builder
	sb.Grow(n)
	sb.Write(all[h.host.start:h.host.end])
	for _, at := range h.vals {
		sb.Write(all[at.start:at.end])
	}
	vals := sb.String()
	c.req.Host, vals = vals[:h.host.end-h.host.start], vals[h.host.end-h.host.start:]
	clear(c.hdr)
	for i, at := range h.vals {
		if at.set {
			c.vals[i][0], vals = vals[:at.end-at.start], vals[at.end-at.start:]
			c.hdr[callbackHeaders[i]] = c.vals[i][:]
		}
	}
	c.req.ContentLength = int64(h.contentLength)
	c.req.Close = h.close
	c.body.Reset(all[h.n:])
	c.w.reset(h.close)
	defer func() {
		if p := recover(); p != nil {
			aborted = true
			if p != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.fp.log.Error("panic serving a callback", "remote", c.req.RemoteAddr, "panic", fmt.Sprint(p), "stack", string(buf))
			}
		}
	}()
	c.fp.h.ServeHTTP(&c.w, c.req)
	return c.w.finish(), false
}

// handoff is a connection on its way to net/http, with the verdict on the
// request it is handed over at.
type handoff struct {
	conn    *handedConn
	verdict headVerdict
}

// handedConn is a connection handed to net/http: it reads what the fast
// path had read of it first.
type handedConn struct {
	net.Conn
	br *bufio.Reader
}

func (c *handedConn) Read(b []byte) (int, error) { return c.br.Read(b) }

// CloseWrite keeps the half close net/http uses after a body too large to
// read.
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// timed is the timed connection underneath, if it is one (see
// connTimeouts.connState).
func (c *handedConn) timed() *timedConn {
	if tc, ok := c.Conn.(interface{ timed() *timedConn }); ok {
		return tc.timed()
	}
	return nil
}

// bodyReader is a request body already read.
type bodyReader struct{ bytes.Reader }

func (r *bodyReader) Close() error { return nil }

// connContext is the context of a fast connection's requests. It ends when
// the connection does, and when Err is asked once the client has closed
// its side: the runner asks after a click's logic whether anyone still
// waits for the answer (net/http finds this out with a read in the
// background during every request).
type connContext struct {
	context.Context
	cancel context.CancelFunc
	conn   net.Conn
}

func (c *connContext) Err() error {
	if err := c.Context.Err(); err != nil {
		return err
	}
	if peerGone(c.conn) {
		c.cancel()
	}
	return c.Context.Err()
}

// fastWriter is the http.ResponseWriter of a fast connection: it writes
// the status line and the headers, sorted as net/http sorts them, at the
// first write, and the body as it comes, delimited by its Content-Length
// (every answer of the callback route has one) or else by closing the
// connection.
type fastWriter struct {
	bw       *bufio.Writer
	h        http.Header
	dates    *dateCache
	stopping *atomic.Bool // the server is shutting down: answers say Connection: close
	keys     []string

	wrote  bool
	length int // the declared Content-Length, -1 if none
	n      int // body bytes written
	close  bool
}

func (w *fastWriter) reset(close bool) {
	clear(w.h)
	w.wrote, w.length, w.n, w.close = false, -1, 0, close
}

func (w *fastWriter) Header() http.Header { return w.h }

var (
	connectionClose = []string{"close"}
	newlineToSpace  = strings.NewReplacer("\r", " ", "\n", " ")
)

func (w *fastWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	if code < 200 || code > 999 {
		// net/http sends 1xx answers ahead of the final one; the callback
		// route has none to send.
		panic(fmt.Sprintf("fast path: status %d is not supported", code))
	}
	w.wrote = true
	if v := w.h["Content-Length"]; len(v) == 1 {
		if n, err := strconv.Atoi(v[0]); err == nil && n >= 0 {
			w.length = n
		}
	}
	if slices.Contains(w.h["Connection"], "close") || w.length < 0 || w.stopping.Load() {
		w.close = true
	}
	if w.close {
		w.h["Connection"] = connectionClose
	}
	if _, ok := w.h["Date"]; !ok {
		w.h["Date"] = w.dates.header(time.Now())
	}
	bw := w.bw
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), int64(code), 10))
	bw.WriteByte(' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	bw.WriteString(text)
	bw.WriteString("\r\n")
	w.keys = w.keys[:0]
	for k := range w.h {
		w.keys = append(w.keys, k)
	}
	slices.Sort(w.keys)
	for _, k := range w.keys {
		if !isToken(k) {
			continue // as net/http does
		}
		for _, v := range w.h[k] {
			if strings.ContainsAny(v, "\r\n") {
				v = newlineToSpace.Replace(v) // as net/http does: no header is split in two
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
}

func (w *fastWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.length >= 0 && w.n+len(p) > w.length {
		return 0, http.ErrContentLength
	}
	w.n += len(p)
	return w.bw.Write(p)
}

// Flush sends what was written so far.
func (w *fastWriter) Flush() {
	w.WriteHeader(http.StatusOK)
	w.bw.Flush()
}

// finish ends the answer once the handler has returned, and reports
// whether the connection can carry another.
func (w *fastWriter) finish() bool {
	if !w.wrote {
		if _, ok := w.h["Content-Length"]; !ok {
			w.h["Content-Length"] = []string{"0"}
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.n < w.length {
		w.close = true // the client would wait for bytes that never come
	}
	return !w.close
}

var _ http.Flusher = (*fastWriter)(nil)

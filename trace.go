package main

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
)

// Request tracing: every request gets an id — the platform's X-Request-Id
// or X-Tt-Logid when it sends one, else a generated one — that is echoed in
// the answer's X-Request-Id header and carried by every log line the
// request causes, the background work it starts included.

type requestIDKey struct{}

// requestIDs makes ids for requests that bring none: a random prefix per
// process and a counter, unique and cheap.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs { return &requestIDs{prefix: "cc-" + randomID(4) + "-"} }

func (g *requestIDs) next() string {
	var b [48]byte
	return string(strconv.AppendUint(append(b[:0], g.prefix...), g.n.Add(1), 10))
}

// withRequestID tags each request with its id.
func withRequestID(ids *requestIDs, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := new(requestContext)
		c.tag(ids, w, r)
		next.ServeHTTP(w, r.WithContext(c))
	})
}

// of returns r's id: the platform's, or a new one.
func (g *requestIDs) of(r *http.Request) string {
	id := header(r.Header, "X-Request-Id")
	if !validRequestID(id) {
		id = header(r.Header, "X-Tt-Logid")
	}
	if !validRequestID(id) {
		id = g.next()
	}
	return id
}

// validRequestID keeps what a client sends out of the logs unless it looks
// like an id: at most 128 letters, digits and . _ : -.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// requestContext is a context that carries a request's id, and the
// one-element value of the X-Request-Id header that echoes it. The
// callback route keeps one inside each callback's answer (see
// callbackAnswer): what context.WithValue, the id's interface value and
// the header's slice took three allocations a click for comes with the
// answer's one.
type requestContext struct {
	context.Context
	id     string
	header [1]string // set by tag
}

// tag makes c r's context with r's id, and echoes the id in the answer w.
func (c *requestContext) tag(ids *requestIDs, w http.ResponseWriter, r *http.Request) {
	id := ids.of(r)
	*c = requestContext{Context: r.Context(), id: id, header: [1]string{id}}
	w.Header()["X-Request-Id"] = c.header[:]
}

func (c *requestContext) Value(key any) any {
	if key == (requestIDKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func requestID(ctx context.Context) string {
	if c, ok := ctx.Value(requestIDKey{}).(*requestContext); ok {
		return c.id
	}
	return ""
}

// requestIDAttr adds the context's request id to a log record.
func requestIDAttr(ctx context.Context, r *slog.Record) {
	if ctx == nil {
		return
	}
	if id := requestID(ctx); id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
}

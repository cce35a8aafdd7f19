package main

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"
)

// logSink batches log lines: an INFO line per callback written straight to
// stderr costs a system call each, a large share of a click's budget. Lines
// are written out every flushEvery, when 64 KB are waiting, and at once for
// warnings and errors (see urgentHandler), so what an operator is paged for
// is never held back.
type logSink struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

const (
	flushEvery   = 100 * time.Millisecond
	logSinkLimit = 64 << 10
)

func newLogSink(w io.Writer) *logSink { return &logSink{w: w, buf: make([]byte, 0, logSinkLimit)} }

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, p...)
	if len(s.buf) >= logSinkLimit {
		s.flushLocked()
	}
	return len(p), nil
}

// Flush writes out what is waiting.
func (s *logSink) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
}

func (s *logSink) flushLocked() {
	if len(s.buf) > 0 {
		s.w.Write(s.buf)
		s.buf = s.buf[:0]
	}
}

// run flushes every flushEvery until ctx ends, then once more.
func (s *logSink) run(ctx context.Context) {
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.Flush()
		case <-ctx.Done():
			s.Flush()
			return
		}
	}
}

// urgentHandler adds the request id to every record and flushes the sink
// after every record at WARN or above.
type urgentHandler struct {
	slog.Handler
	sink *logSink
}

func (h urgentHandler) Handle(ctx context.Context, r slog.Record) error {
	requestIDAttr(ctx, &r)
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.sink.Flush()
	}
	return err
}

func (h urgentHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return urgentHandler{h.Handler.WithAttrs(attrs), h.sink}
}

func (h urgentHandler) WithGroup(name string) slog.Handler {
	return urgentHandler{h.Handler.WithGroup(name), h.sink}
}

// newLogger builds the program's logger over a batching sink.
func newLogger(format string, sink *logSink) *slog.Logger {
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(sink, nil)
	} else {
		h = slog.NewTextHandler(sink, nil)
	}
	return slog.New(urgentHandler{h, sink})
}

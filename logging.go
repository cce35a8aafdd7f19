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
// is never held back. A slow destination (a disk in write-back, a full
// pipe) holds up only the writer of a batch, not every request that logs:
// batches are written outside the lock that lines are added under.
type logSink struct {
	mu    sync.Mutex // guards buf
	buf   []byte
	spare []byte
	wmu   sync.Mutex // orders the batches on w
	w     io.Writer

	seconds secondCache // for the lines' times
}

const (
	flushEvery   = 100 * time.Millisecond
	logSinkLimit = 64 << 10
)

func newLogSink(w io.Writer) *logSink {
	return &logSink{w: w, buf: make([]byte, 0, logSinkLimit), spare: make([]byte, 0, logSinkLimit)}
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.buf = append(s.buf, p...)
	full := len(s.buf) >= logSinkLimit
	s.mu.Unlock()
	if full {
		s.Flush()
	}
	return len(p), nil
}

// Flush writes out what is waiting.
func (s *logSink) Flush() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	batch := s.buf
	s.buf = s.spare[:0]
	s.mu.Unlock()
	if len(batch) > 0 {
		s.w.Write(batch)
	}
	s.spare = batch // only touched under wmu
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
// after every record at WARN or above. Plain records are formatted by
// writeLine (logline.go), the others by the slog handler it wraps.
type urgentHandler struct {
	slog.Handler
	sink  *logSink
	json  bool
	plain bool // not made WithAttrs or WithGroup: writeLine may format
}

func (h urgentHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.plain && r.NumAttrs() <= maxLineAttrs {
		var buf [maxLineAttrs]slog.Attr
		attrs := buf[:0]
		r.Attrs(func(a slog.Attr) bool { attrs = append(attrs, a); return true })
		if h.writeLine(ctx, r.Time, r.Level, r.Message, attrs) {
			return nil
		}
	}
	return h.handleSlow(ctx, r)
}

// handleSlow has the wrapped slog handler format r.
func (h urgentHandler) handleSlow(ctx context.Context, r slog.Record) error {
	requestIDAttr(ctx, &r)
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.sink.Flush()
	}
	return err
}

func (h urgentHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return urgentHandler{Handler: h.Handler.WithAttrs(attrs), sink: h.sink, json: h.json}
}

func (h urgentHandler) WithGroup(name string) slog.Handler {
	return urgentHandler{Handler: h.Handler.WithGroup(name), sink: h.sink, json: h.json}
}

// newLogger builds the program's logger over a batching sink.
func newLogger(format string, sink *logSink) *slog.Logger {
	json := format == "json"
	var h slog.Handler
	if json {
		h = slog.NewJSONHandler(sink, nil)
	} else {
		h = slog.NewTextHandler(sink, nil)
	}
	return slog.New(urgentHandler{Handler: h, sink: sink, json: json, plain: true})
}

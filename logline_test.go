package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// contextWithRequestID is ctx carrying the request id id.
func contextWithRequestID(ctx context.Context, id string) context.Context {
	return &requestContext{Context: ctx, id: id}
}

// slogLine is what slog's own handler writes for a record, with the request
// id added last as urgentHandler does.
func slogLine(t testing.TB, json bool, tm time.Time, level slog.Level, msg string, attrs []slog.Attr, id string) string {
	var buf bytes.Buffer
	var h slog.Handler = slog.NewTextHandler(&buf, nil)
	if json {
		h = slog.NewJSONHandler(&buf, nil)
	}
	r := slog.NewRecord(tm, level, msg, 0)
	r.AddAttrs(attrs...)
	if id != "" {
		r.AddAttrs(slog.String("request_id", id))
	}
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// lineSeconds is shared by the checked lines, so that their times are
// written both from a cached second and from a new one.
var lineSeconds secondCache

func checkLine(t testing.TB, tm time.Time, level slog.Level, msg string, attrs []slog.Attr, id string) {
	t.Helper()
	for _, json := range []bool{false, true} {
		got, ok := appendLine(nil, json, &lineSeconds, tm, level, msg, attrs, id)
		if y := tm.Year(); !ok && json && !tm.IsZero() && (y < 0 || y > 9999) {
			continue // slog's JSON handler writes an error in its place; it is left to slog
		}
		if !ok {
			t.Fatalf("appendLine refused %v at %v", attrs, tm)
		}
		if want := slogLine(t, json, tm, level, msg, attrs, id); string(got) != want {
			t.Errorf("json=%v\n got %q\nwant %q", json, got, want)
		}
	}
}

var awkwardStrings = []string{
	"", "plain", "with space", "a=b", `quote"d`, `back\slash`, "tab\there", "new\nline", "cr\r",
	"\x00\x01\x1f", "del\x7f", "bad utf8 \xff\xfe", "half \xe4\xb8", "\u2028\u2029", "nbsp\u00a0", "zero\u200bwidth",
	"全量发布", "emoji 🚀", "<html>&amp;", "om_dc13264520392913993dd051dba21dcf", "ou_1", "1.5ms", "-", "=",
}

func TestLineFormatMatchesSlog(t *testing.T) {
	shanghai := time.FixedZone("CST", 8*3600)
	times := []time.Time{
		{},
		time.Date(2026, 11, 25, 16, 15, 59, 0, time.UTC),
		time.Date(2026, 11, 25, 16, 15, 59, 123456789, time.UTC),
		// The same second in another zone: its cached text is not reused.
		time.Date(2026, 11, 25, 16, 15, 59, 123456789, time.UTC).In(shanghai),
		time.Date(2026, 1, 2, 3, 4, 5, 999999999, shanghai),
		time.Date(2026, 1, 2, 3, 4, 5, 1000000, time.FixedZone("", -90*60)),
		time.Date(1969, 12, 31, 23, 59, 59, 500000000, time.UTC),
		time.Date(1901, 1, 1, 0, 0, 0, 999999999, time.FixedZone("LMT", -17*60-30)),
		time.Date(999, 3, 1, 0, 0, 0, 100, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 5, time.UTC),
		time.Date(-5, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now(),
	}
	levels := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError, slog.LevelInfo + 2, slog.LevelError + 4}
	for _, tm := range times {
		for _, level := range levels {
			checkLine(t, tm, level, "callback", []slog.Attr{slog.String("outcome", "success")}, "cc-1")
		}
	}
	now := times[2]
	for _, s := range awkwardStrings {
		checkLine(t, now, slog.LevelInfo, s, []slog.Attr{slog.String(s+"k", s)}, s)
		checkLine(t, now, slog.LevelInfo, "m", []slog.Attr{slog.String("v", s)}, "")
	}
	checkLine(t, now, slog.LevelInfo, "numbers", []slog.Attr{
		slog.Int("n", -42), slog.Int64("big", 1<<62), slog.Uint64("u", 1<<63), slog.Bool("t", true), slog.Bool("f", false),
		slog.Duration("d0", 0), slog.Duration("d1", 1500*time.Microsecond), slog.Duration("d2", -3*time.Hour), slog.Duration("d3", 999),
	}, "")
	checkLine(t, now, slog.LevelInfo, "none", nil, "")
}

func TestLineFormatLeavesOtherKindsToSlog(t *testing.T) {
	for _, a := range []slog.Attr{
		slog.Any("err", errors.New("x")), slog.Float64("f", 1.5), slog.Time("t", time.Now()),
		slog.Group("g", slog.String("a", "b")), slog.String("", "empty key"),
	} {
		if _, ok := appendLine(nil, false, &lineSeconds, time.Now(), slog.LevelInfo, "m", []slog.Attr{a}, ""); ok {
			t.Errorf("%v was formatted here, want it left to slog", a)
		}
	}
}

// TestLoggerWritesWhatSlogWrites checks the whole logger, both ways a line
// reaches it, against slog's handler: the fast path, and the fallback for
// derived loggers and other kinds of value.
func TestLoggerWritesWhatSlogWrites(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var out, want bytes.Buffer
		sink := newLogSink(&out)
		log := newLogger(format, sink)
		var ref *slog.Logger
		if format == "json" {
			ref = slog.New(slog.NewJSONHandler(&want, nil))
		} else {
			ref = slog.New(slog.NewTextHandler(&want, nil))
		}
		ctx := contextWithRequestID(context.Background(), "cc-7")
		attrs := []any{"message_id", "om_1", "n", 3, "err", errors.New("boom"), "f", 2.5}
		log.InfoContext(ctx, "all kinds", attrs...)
		ref.InfoContext(ctx, "all kinds", append(attrs, "request_id", "cc-7")...)
		log.With("k", "v").WarnContext(ctx, "derived", "a", "b")
		ref.With("k", "v").WarnContext(ctx, "derived", "a", "b", "request_id", "cc-7")
		logFast(ctx, log, slog.LevelInfo, "fast", slog.String("open_id", "ou 1"))
		ref.InfoContext(ctx, "fast", "open_id", "ou 1", "request_id", "cc-7")
		logFast(ctx, log, slog.LevelWarn, "fast, left to slog", slog.Any("err", errors.New("boom")))
		ref.WarnContext(ctx, "fast, left to slog", "err", errors.New("boom"), "request_id", "cc-7")
		logFast(context.Background(), log, slog.LevelDebug, "not enabled")
		sink.Flush()
		// Times differ between the two loggers; compare the lines without them.
		if got, w := dropTimes(out.String()), dropTimes(want.String()); got != w {
			t.Errorf("%s:\n got %s\nwant %s", format, got, w)
		}
	}
}

func dropTimes(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		if j := strings.Index(l, "level"); j > 0 {
			lines[i] = l[j:]
		}
	}
	return strings.Join(lines, "\n")
}

func FuzzLineFormat(f *testing.F) {
	for _, s := range awkwardStrings {
		f.Add("k", s, s, int64(len(s)), true)
	}
	f.Fuzz(func(t *testing.T, key, msg, value string, n int64, b bool) {
		if key == "" {
			key = "k"
		}
		checkLine(t, time.Unix(0, n), slog.Level(n%16), msg,
			[]slog.Attr{slog.String(key, value), slog.Int64("n", n), slog.Duration("d", time.Duration(n)), slog.Bool("b", b)}, value)
	})
}

func BenchmarkLogLine(b *testing.B) {
	sink := newLogSink(discardWriter{})
	log := newLogger("text", sink)
	ctx := contextWithRequestID(context.Background(), "cc-1234-56")
	c := testClick("om_dc13264520392913993dd051dba21dcf")
	b.ReportAllocs()
	for b.Loop() {
		logCallback(ctx, log, c, reply{outcome: OutcomeSuccess}, time.Now(), time.Now())
	}
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

package main

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// The lines logged for every callback are formatted here rather than by
// slog's handlers: in exactly their text or JSON format, byte for byte
// (TestLineFormatMatchesSlog holds this code to that), but without a Record,
// a stack walk or an allocation. Under load slog's formatting of the two
// lines a first click logs cost about a fifth of the server's throughput.
// Records that carry anything other than strings, integers, booleans and
// durations, and loggers made WithAttrs or WithGroup, go to slog.

// maxLineAttrs is the most attributes a line formatted here may carry.
const maxLineAttrs = 16

var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// logFast logs without the caller's program counter, which slog.Logger
// captures with a stack walk that no handler here prints, and, with the
// program's own handler, without building a slog.Record: these are the
// lines of the click path, where either is a measurable share of the work.
func logFast(ctx context.Context, log *slog.Logger, level slog.Level, msg string, attrs ...slog.Attr) {
	logAt(ctx, log, time.Now(), level, msg, attrs...)
}

// logAt is logFast for a caller that has just read the clock.
func logAt(ctx context.Context, log *slog.Logger, t time.Time, level slog.Level, msg string, attrs ...slog.Attr) {
	h := log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	u, ok := h.(urgentHandler)
	if ok && u.writeLine(ctx, t, level, msg, attrs) {
		return
	}
	r := slog.NewRecord(t, level, msg, 0)
	r.AddAttrs(attrs...)
	if ok {
		u.handleSlow(ctx, r) // writeLine has just declined it
		return
	}
	h.Handle(ctx, r)
}

// writeLine formats one line into the sink. It reports false, having
// written nothing, when an attribute is of a kind only slog formats.
func (h urgentHandler) writeLine(ctx context.Context, t time.Time, level slog.Level, msg string, attrs []slog.Attr) bool {
	if !h.plain || len(attrs) > maxLineAttrs {
		return false
	}
	bp := lineBufs.Get().(*[]byte)
	b, ok := appendLine((*bp)[:0], h.json, &h.sink.seconds, t, level, msg, attrs, requestID(ctx))
	if ok {
		h.sink.Write(b)
		if level >= slog.LevelWarn {
			h.sink.Flush()
		}
	}
	if cap(b) <= 64<<10 {
		*bp = b[:0]
		lineBufs.Put(bp)
	}
	return ok
}

// appendLine appends what slog.NewTextHandler(w, nil), or with json
// slog.NewJSONHandler(w, nil), writes for the record, with request_id last
// when id is not empty, as urgentHandler adds it. sec keeps the text of
// the last second a line was written in.
func appendLine(b []byte, json bool, sec *secondCache, t time.Time, level slog.Level, msg string, attrs []slog.Attr, id string) ([]byte, bool) {
	for _, a := range attrs {
		if a.Key == "" {
			return b, false
		}
		switch a.Value.Kind() {
		case slog.KindString, slog.KindInt64, slog.KindUint64, slog.KindBool, slog.KindDuration:
		default:
			return b, false
		}
	}
	l := lineWriter{b: b, json: json}
	if json {
		l.b = append(l.b, '{')
	}
	if !t.IsZero() {
		l.key("time")
		var ok bool
		if json {
			l.b = append(l.b, '"')
			l.b, ok = sec.append(l.b, t, true)
			l.b = append(l.b, '"')
		} else {
			l.b, ok = sec.append(l.b, t, false)
		}
		if !ok {
			return b, false
		}
	}
	l.key("level")
	l.str(level.String())
	l.key("msg")
	l.str(msg)
	for _, a := range attrs {
		l.key(a.Key)
		v := a.Value
		switch v.Kind() {
		case slog.KindString:
			l.str(v.String())
		case slog.KindInt64:
			l.b = strconv.AppendInt(l.b, v.Int64(), 10)
		case slog.KindUint64:
			l.b = strconv.AppendUint(l.b, v.Uint64(), 10)
		case slog.KindBool:
			l.b = strconv.AppendBool(l.b, v.Bool())
		case slog.KindDuration:
			if json {
				l.b = strconv.AppendInt(l.b, int64(v.Duration()), 10)
			} else {
				l.b = append(l.b, v.Duration().String()...)
			}
		}
	}
	if id != "" {
		l.key("request_id")
		l.str(id)
	}
	if json {
		l.b = append(l.b, '}')
	}
	return append(l.b, '\n'), true
}

type lineWriter struct {
	b    []byte
	json bool
	sep  bool
}

func (l *lineWriter) key(k string) {
	if l.sep {
		if l.json {
			l.b = append(l.b, ',')
		} else {
			l.b = append(l.b, ' ')
		}
	}
	l.sep = true
	l.str(k)
	if l.json {
		l.b = append(l.b, ':')
	} else {
		l.b = append(l.b, '=')
	}
}

func (l *lineWriter) str(s string) {
	switch {
	case l.json:
		l.b = append(l.b, '"')
		l.b = appendJSONEscaped(l.b, s)
		l.b = append(l.b, '"')
	case !textNeedsQuoting(s):
		l.b = append(l.b, s...)
	case plainRun(&quotesAsIs, s) == len(s):
		// What strconv.Quote makes of printable ASCII with no quote or
		// backslash, as most messages are: the text between quotes.
		l.b = append(l.b, '"')
		l.b = append(l.b, s...)
		l.b = append(l.b, '"')
	default:
		l.b = strconv.AppendQuote(l.b, s)
	}
}

// Bytes that the text and JSON formats write as they are, looked up
// rather than tested: every value and key of every line is scanned.
var (
	// textAsIs: ASCII that slog leaves unquoted in a text value.
	textAsIs = byteSet(func(c byte) bool { return c == '\\' || c != ' ' && c != '=' && jsonSafe(c) })
	// jsonAsIs: ASCII that stands for itself in a JSON string.
	jsonAsIs = byteSet(jsonSafe)
	// quotesAsIs: ASCII that strconv.Quote copies without an escape.
	quotesAsIs = byteSet(func(c byte) bool { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\' })
)

// byteSet is the set of ASCII bytes for which in holds; bytes from 0x80 up
// are never in it.
func byteSet(in func(byte) bool) (set [256]bool) {
	for c := range utf8.RuneSelf {
		set[c] = in(byte(c))
	}
	return set
}

// plainRun returns the length of the longest prefix of s made of bytes in set.
func plainRun(set *[256]bool, s string) int {
	i := 0
	for i < len(s) && set[s[i]] {
		i++
	}
	return i
}

// secondCache holds the text of the second the last line was written
// in: formatting a time was a good share of a line.
type secondCache struct{ perSecond[string] }

// secondLen is the length of a second's RFC 3339 text without its offset.
const secondLen = len("2006-01-02T15:04:05")

// rfc3339Second is t's second as RFC 3339 text, or "" for a year of other
// than four digits.
func rfc3339Second(t time.Time) string {
	whole := t.Truncate(time.Second).Format(time.RFC3339)
	if len(whole) <= secondLen || whole[4] != '-' || whole[secondLen] != 'Z' && whole[secondLen] != '+' && whole[secondLen] != '-' {
		return ""
	}
	return whole
}

// append appends t as slog writes it: RFC 3339 with three digits of
// milliseconds in the text format, with nanoseconds and no trailing zeros
// (RFC3339Nano) in JSON. It reports false for a time slog's JSON handler
// cannot write (a year outside 0…9999), which is then left to slog.
func (c *secondCache) append(b []byte, t time.Time, json bool) ([]byte, bool) {
	text := c.get(t, rfc3339Second)
	if text == "" {
		if json {
			return b, false
		}
		return appendRFC3339Millis(b, t), true
	}
	b = append(b, text[:secondLen]...)
	ns := t.Nanosecond()
	switch {
	case !json:
		b = append(b, '.', byte('0'+ns/1e8), byte('0'+ns/1e7%10), byte('0'+ns/1e6%10))
	case ns != 0:
		var frac [10]byte
		frac[0] = '.'
		for i, d := 9, ns; i > 0; i, d = i-1, d/10 {
			frac[i] = byte('0' + d%10)
		}
		n := len(frac)
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, text[secondLen:]...), true
}

// appendRFC3339Millis is slog's text time: RFC 3339 with exactly three
// digits of milliseconds.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	// RFC3339Nano trims trailing zeros: add a tenth of a millisecond so
	// that there are always four digits, then drop the fourth.
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}

// jsonSafe reports whether an ASCII byte stands for itself in a JSON
// string: anything but control characters, the quote and the backslash.
func jsonSafe(c byte) bool { return c >= 0x20 && c != '"' && c != '\\' }

// textNeedsQuoting is slog's rule for quoting a text value: empty, or
// holding a space, '=', a byte JSON would escape (the backslash aside), or
// a rune that is invalid, a space or not printable.
func textNeedsQuoting(s string) bool {
	if s == "" {
		return true
	}
	for i := plainRun(&textAsIs, s); i < len(s); i += plainRun(&textAsIs, s[i:]) {
		if s[i] < utf8.RuneSelf {
			return true
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// appendJSONEscaped is slog's JSON string escaping: \n \r \t, \u00XX for
// other control characters, \ufffd for invalid UTF-8, and \u2028 and \u2029
// escaped; HTML characters are left as they are.
func appendJSONEscaped(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := plainRun(&jsonAsIs, s); i < len(s); i += plainRun(&jsonAsIs, s[i:]) {
		c := s[i]
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(b, s[start:]...)
}

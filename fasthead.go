package main

import "bytes"

// The fast path's request reader: it reads the head of the one request
// shape the platform sends to the card request URL, and nothing else.
// Whatever it does not take, it leaves to net/http (see fastPath), so it
// has no error to answer and no leniency to offer: a request it takes is
// one net/http reads the same way (FuzzFastHead checks this against
// net/http's own reader), and a request it is not sure of is not its own.

// callbackHeaders are the request headers the callback route reads (see
// signedFrom and requestIDs.of): the only ones the fast path passes on.
var callbackHeaders = [...]string{
	"X-Lark-Request-Timestamp",
	"X-Lark-Request-Nonce",
	"X-Lark-Signature",
	"X-Request-Id",
	"X-Tt-Logid",
}

// fastHead is what the fast path reads from a request's head.
type fastHead struct {
	n             int  // bytes of the head, its blank line included
	contentLength int  // bytes of the body that follows
	close         bool // the client asked to close the connection after the answer
	host          fieldAt
	// vals are the first values of callbackHeaders.
	vals [len(callbackHeaders)]fieldAt
}

// fieldAt is a header value's place in the head, [start, end), and
// whether the header was there at all (an empty value is still a value).
type fieldAt struct {
	start, end int
	set        bool
}

// headVerdict is what headReader made of the bytes it was given.
type headVerdict uint8

const (
	headMore  headVerdict = iota // the head is not all in yet, and nothing in it says net/http's
	headFast                     // the fast path serves it
	headRoute                    // another method, path or protocol: net/http's
	headOther                    // a header or a form the fast path leaves to net/http
	headSize                     // head and body larger than the fast path reads at once: net/http's
)

func (v headVerdict) String() string {
	switch v {
	case headMore:
		return "more"
	case headFast:
		return "fast"
	case headRoute:
		return "route"
	case headOther:
		return "header"
	case headSize:
		return "size"
	}
	return "unknown"
}

// headReader reads a request's head from the bytes read off the
// connection so far, in the plainest form only: CRLF line ends, header
// names that are tokens, values without control bytes, one Host, one
// Content-Length of digits, no Transfer-Encoding, Expect or Upgrade, and
// Connection either close or keep-alive. Anything else goes to net/http,
// which answers it or refuses it as it would any request; the fast path
// decides this before it reads a byte past the head, so net/http is
// handed the connection at the request's first byte.
//
// Each call goes on from where the last one stopped, and looks at no byte
// twice, so a head that arrives a byte at a time costs no more than one
// that arrives whole.
type headReader struct {
	h              fastHead
	pos            int // where the first line not read yet starts; 0 until the request line is in
	scanned        int // how far from pos there is no line end
	hosts, lengths int
}

// read reads the head from b, the bytes read from the connection so far,
// the bytes given to the last call first. line is the request line the
// fast path serves ("POST {path} HTTP/1.1\r\n"), and a head and body
// larger than limit bytes are not its own. Once it has said anything but
// headMore, r is done with this request.
func (r *headReader) read(b, line []byte, limit int) headVerdict {
	if r.pos == 0 {
		if n := min(len(b), len(line)); !bytes.Equal(b[:n], line[:n]) {
			return headRoute
		}
		if len(b) < len(line) {
			return headMore
		}
		r.pos = len(line)
	}
	h := &r.h
	for {
		i := bytes.IndexByte(b[r.pos+r.scanned:], '\n')
		if i < 0 {
			if len(b) >= limit {
				return headSize
			}
			r.scanned = len(b) - r.pos
			return headMore
		}
		end := r.pos + r.scanned + i // the LF
		r.scanned = 0
		if end == r.pos || b[end-1] != '\r' {
			return headOther // a bare LF: net/http reads it as a line end, RFC 9112 need not
		}
		l, start := b[r.pos:end-1], r.pos
		r.pos = end + 1
		if len(l) == 0 {
			h.n = r.pos
			break
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 || !isToken(l[:colon]) {
			return headOther
		}
		vs, ve := trimOWS(l, colon+1)
		if !isFieldValue(l[vs:ve]) {
			return headOther
		}
		name, val := l[:colon], l[vs:ve]
		at := fieldAt{start + vs, start + ve, true}
		switch {
		case equalFold(name, "Content-Length"):
			n, ok := digits(val)
			if r.lengths++; !ok || r.lengths > 1 {
				return headOther
			}
			h.contentLength = n
		case equalFold(name, "Host"):
			if r.hosts++; r.hosts > 1 || !isHost(val) {
				return headOther
			}
			h.host = at
		case equalFold(name, "Connection"):
			switch {
			case equalFold(val, "close"):
				h.close = true
			case !equalFold(val, "keep-alive"):
				return headOther
			}
		case equalFold(name, "Transfer-Encoding"), equalFold(name, "Expect"), equalFold(name, "Upgrade"):
			return headOther
		default:
			for k, want := range callbackHeaders {
				if !h.vals[k].set && equalFold(name, want) {
					h.vals[k] = at
					break
				}
			}
		}
	}
	if h.n+h.contentLength > limit {
		return headSize
	}
	if r.hosts != 1 || r.lengths != 1 {
		return headOther
	}
	return headFast
}

// isToken reports whether b is an RFC 9110 token, as a header name must
// be.
func isToken[T string | []byte](b T) bool {
	for i := range len(b) {
		if !tokenByte[b[i]] {
			return false
		}
	}
	return len(b) > 0
}

var tokenByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// isFieldValue reports whether b holds no control byte but tab, as
// net/http requires of a header value.
func isFieldValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// isHost reports whether b is a Host value of the plainest kind: a name or
// an address, with a port. net/http accepts more; the fast path leaves
// the rest to it.
func isHost(b []byte) bool {
	for _, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_') {
			return false
		}
	}
	return true
}

// trimOWS returns the bounds of l[from:] without the spaces and tabs
// around it.
func trimOWS(l []byte, from int) (start, end int) {
	start, end = from, len(l)
	for start < end && (l[start] == ' ' || l[start] == '\t') {
		start++
	}
	for end > start && (l[end-1] == ' ' || l[end-1] == '\t') {
		end--
	}
	return start, end
}

// digits reads a Content-Length: 1 to 7 decimal digits, no sign. Longer
// values are over maxBody anyway, and net/http answers them.
func digits(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 7 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// equalFold reports whether b is s, ignoring ASCII case only, as net/http
// compares header names and tokens: bytes.EqualFold folds Unicode too, and
// would take "cloſe" (a long s) for "close".
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lower(s[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

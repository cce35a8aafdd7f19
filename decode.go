package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
)

// This file decodes callback bodies. encoding/json spends most of a
// click's decoding time on reflection and on values the server never
// reads; this scanner reads the few fields a callback needs in one pass,
// validates the rest without building it, and refuses whatever
// encoding/json would refuse as syntax. Field names match exactly (the
// platform spells them one way), not case-insensitively as encoding/json
// does.

// maxDepth bounds nesting, as encoding/json does.
const maxDepth = 10000

// scanner walks one JSON text. Its first error sticks: every method does
// nothing once err is set, so a decoder reads fields in plain loops and
// checks err once.
type scanner struct {
	b     []byte
	i     int
	depth int
	err   error
	plain bool // the last string read has no escape and is all ASCII
	// text is a copy of b, made when a string is first read: the strings
	// of a decoded body share it, one allocation instead of one each.
	text string
}

// syntaxError says where a body stops being JSON.
type syntaxError struct {
	msg string
	off int
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at offset %d: %s", e.off, e.msg)
}

func (s *scanner) fail(msg string) {
	if s.err == nil {
		s.err = &syntaxError{msg, s.i}
	}
	s.i = len(s.b)
}

func (s *scanner) ws() {
	for s.i < len(s.b) && s.b[s.i] <= ' ' {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek returns the next non-space byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// open enters an object or array that must start here.
func (s *scanner) open(c byte) bool {
	if s.err != nil {
		return false
	}
	if s.peek() != c {
		s.fail("want " + string(c))
		return false
	}
	if s.depth++; s.depth > maxDepth {
		s.fail("nested too deeply")
		return false
	}
	s.i++
	return true
}

// more reports whether the object or array entered with open has another
// member, consuming the comma before it or the bracket that ends it.
//
//	for first := true; s.more('}', &first); { key := s.key(); … }
func (s *scanner) more(end byte, first *bool) bool {
	if s.err != nil {
		return false
	}
	switch c := s.peek(); {
	case c == end:
		s.i++
		s.depth--
		return false
	case *first:
	case c == ',':
		s.i++
	default:
		s.fail("want ',' or '" + string(end) + "'")
		return false
	}
	*first = false
	return true
}

// key reads an object key and the colon after it. The key is returned
// still escaped: a key written with escapes matches no field name.
func (s *scanner) key() []byte {
	k := s.rawString()
	if s.peek() != ':' {
		s.fail("want ':' after an object key")
		return nil
	}
	s.i++
	return k
}

// rawString reads a string token and returns its contents still escaped.
func (s *scanner) rawString() []byte {
	if s.err != nil {
		return nil
	}
	if s.peek() != '"' {
		s.fail("want a string")
		return nil
	}
	s.i++
	start := s.i
	s.plain = true
	for s.i < len(s.b) {
		// Eight bytes at a time past what needs no attention (the
		// encrypted envelope is one string of kilobytes), landing on the
		// first byte that does; the body's last few bytes one at a time.
		b, i := s.b, s.i
		for ; i+8 <= len(b); i += 8 {
			if m := special8(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
		}
		for i < len(b) && jsonAsIs[b[i]] {
			i++
		}
		if s.i = i; i >= len(b) {
			break
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1]
		case c == '\\':
			s.plain = false
			s.escape()
		case c < 0x20:
			s.fail("control character in a string")
		default:
			if c >= 0x80 {
				s.plain = false
			}
			s.i++
		}
	}
	s.fail("unterminated string")
	return nil
}

// special8 marks, by the high bit of its byte in the result, each byte of
// the eight in x (little-endian) that ends a string or needs a closer look:
// a quote, a backslash, a control character or a byte of a multi-byte
// UTF-8 sequence. The bit tricks test every byte at once. They never miss
// one, and the lowest byte marked is always one of them: a false mark comes
// only from a borrow out of a marked byte below it.
func special8(x uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := x ^ (ones * '"')
	backslash := x ^ (ones * '\\')
	control := (x - ones*0x20) & ^x
	return (control | (quote-ones)&^quote | (backslash-ones)&^backslash | x) & highs
}

func (s *scanner) escape() {
	s.i++ // the backslash
	if s.i >= len(s.b) {
		return // reported as unterminated
	}
	switch s.b[s.i] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i++
	case 'u':
		if s.i+5 > len(s.b) {
			s.fail("short \\u escape")
			return
		}
		for _, h := range s.b[s.i+1 : s.i+5] {
			if !isHex(h) {
				s.fail("bad \\u escape")
				return
			}
		}
		s.i += 5
	default:
		s.fail("bad escape")
	}
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// object enters an object value, or consumes a null in its place (which,
// as with encoding/json, leaves the fields as they are) and reports false.
func (s *scanner) object() bool {
	if s.isNull() {
		return false
	}
	return s.open('{')
}

// isNull consumes a null if one comes next.
func (s *scanner) isNull() bool {
	if s.peek() == 'n' {
		s.literal("null")
		return true
	}
	return false
}

// str reads a string value into dst; null leaves dst as it is, as
// encoding/json does.
func (s *scanner) str(dst *string) {
	if s.isNull() {
		return
	}
	s.ws()
	start := s.i
	raw := s.rawString()
	if s.err != nil {
		return
	}
	if !s.plain {
		// Escapes and non-ASCII: encoding/json's own rules (surrogates,
		// invalid UTF-8) apply. Rare in a callback. (Into a string of its
		// own, so that dst does not escape to the heap for the common case.)
		var v string
		if err := json.Unmarshal(s.b[start:s.i], &v); err != nil {
			s.fail(err.Error())
		}
		*dst = v
		return
	}
	if len(raw) == 0 {
		*dst = ""
		return
	}
	if s.text == "" {
		s.text = string(s.b)
	}
	*dst = s.text[start+1 : s.i-1]
}

// sealed reads a string without copying it when it has no escape and is
// all ASCII, as base64 text is: the envelope is most of a body.
func (s *scanner) sealed() sealed {
	s.ws()
	start := s.i
	raw := s.rawString()
	if s.err != nil {
		return nil
	}
	if s.plain {
		return sealed(raw[:len(raw):len(raw)])
	}
	var v string
	if err := json.Unmarshal(s.b[start:s.i], &v); err != nil {
		s.fail(err.Error())
		return nil
	}
	return append(sealed{}, v...)
}

// raw reads any value and returns its bytes; null yields nil.
func (s *scanner) raw() []byte {
	s.ws()
	start := s.i
	s.skip()
	if s.err != nil || string(s.b[start:s.i]) == "null" {
		return nil
	}
	return s.b[start:s.i]
}

// skip validates and passes over one value.
func (s *scanner) skip() {
	if s.err != nil {
		return
	}
	switch c := s.peek(); {
	case c == '{':
		s.open('{')
		for first := true; s.more('}', &first); {
			s.key()
			s.skip()
		}
	case c == '[':
		s.open('[')
		for first := true; s.more(']', &first); {
			s.skip()
		}
	case c == '"':
		s.rawString()
	case c == 't':
		s.literal("true")
	case c == 'f':
		s.literal("false")
	case c == 'n':
		s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		s.number()
	default:
		s.fail("want a value")
	}
}

func (s *scanner) literal(word string) {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		s.fail("want " + word)
		return
	}
	s.i += len(word)
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *scanner) number() {
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.digits() == 0:
		s.fail("bad number")
		return
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			s.fail("bad number")
			return
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			s.fail("bad number")
		}
	}
}

// end checks that nothing but white space follows the value.
func (s *scanner) end() error {
	if s.ws(); s.err == nil && s.i < len(s.b) {
		s.fail("data after the JSON value")
	}
	return s.err
}

// decodeInbound decodes a callback body or decrypted envelope into in.
// What it decodes is copied out of body (its strings share one copy),
// except in.Encrypt, which is only read while body is.
func decodeInbound(body []byte, in *inbound) error {
	if !isObject(body) {
		return errNotObject
	}
	s := scanner{b: body}
	s.open('{')
	for first := true; s.more('}', &first); {
		switch string(s.key()) {
		case "encrypt":
			if s.isNull() {
				in.Encrypt = nil
				continue
			}
			in.Encrypt = s.sealed()
		case "type":
			s.str(&in.Type)
		case "challenge":
			s.str(&in.Challenge)
		case "token":
			s.str(&in.Token)
		case "schema":
			s.str(&in.Schema)
		case "header":
			decodeHeader(&s, in)
		case "event":
			decodeEvent(&s, in)
		case "open_id":
			s.str(&in.OpenID)
		case "user_id":
			s.str(&in.UserID)
		case "open_message_id":
			s.str(&in.OpenMessageID)
		case "open_chat_id":
			s.str(&in.OpenChatID)
		case "tenant_key":
			s.str(&in.TenantKey)
		case "action":
			decodeAction(&s, &in.Action)
		default:
			s.skip()
		}
	}
	if err := s.end(); err != nil {
		return fmt.Errorf("body does not have the shape of a card callback: %w", err)
	}
	return nil
}

func decodeHeader(s *scanner, in *inbound) {
	if !s.object() {
		return
	}
	h := &in.Header
	for first := true; s.more('}', &first); {
		switch string(s.key()) {
		case "event_id":
			s.str(&h.EventID)
		case "token":
			s.str(&h.Token)
		case "event_type":
			s.str(&h.EventType)
		case "tenant_key":
			s.str(&h.TenantKey)
		default:
			s.skip()
		}
	}
}

func decodeEvent(s *scanner, in *inbound) {
	if !s.object() {
		return
	}
	e := &in.Event
	for first := true; s.more('}', &first); {
		switch string(s.key()) {
		case "operator":
			if !s.object() {
				continue
			}
			op := &e.Operator
			for first := true; s.more('}', &first); {
				switch string(s.key()) {
				case "tenant_key":
					s.str(&op.TenantKey)
				case "user_id":
					s.str(&op.UserID)
				case "open_id":
					s.str(&op.OpenID)
				case "union_id":
					s.str(&op.UnionID)
				default:
					s.skip()
				}
			}
		case "token":
			s.str(&e.Token)
		case "action":
			decodeAction(s, &e.Action)
		case "context":
			if !s.object() {
				continue
			}
			for first := true; s.more('}', &first); {
				switch string(s.key()) {
				case "open_message_id":
					s.str(&e.Context.OpenMessageID)
				case "open_chat_id":
					s.str(&e.Context.OpenChatID)
				default:
					s.skip()
				}
			}
		default:
			s.skip()
		}
	}
}

func decodeAction(s *scanner, a *wireAction) {
	if !s.object() {
		return
	}
	for first := true; s.more('}', &first); {
		switch string(s.key()) {
		case "value":
			a.Value, a.button = nil, button{}
			s.ws()
			start := s.i
			if s.peek() == '{' {
				a.button = s.button()
			} else if s.skip(); string(s.b[start:s.i]) == "null" {
				continue
			}
			if s.err == nil {
				// Copied: the value outlives the body's buffer.
				a.Value = append(json.RawMessage(nil), s.b[start:s.i]...)
			}
		case "tag":
			s.str(&a.Tag)
		default:
			s.skip()
		}
	}
}

// button reads button_type and button_id of an action.value object: a
// string, or for button_id a number's literal text. Anything else leaves
// them empty: such a click is not ours to act on.
func (s *scanner) button() (b button) {
	s.open('{')
	for first := true; s.more('}', &first); {
		switch string(s.key()) {
		case "button_type":
			// Stored with every click state: the usual value shares one copy.
			if s.plainString(PublishButton) {
				b.typ = PublishButton
			} else {
				b.typ = s.textValue(false)
			}
		case "button_id":
			b.id = s.textValue(true)
		default:
			s.skip()
		}
	}
	return b
}

// plainString passes over the string value want, written without escapes,
// and reports whether it was there.
func (s *scanner) plainString(want string) bool {
	s.ws()
	end := s.i + len(want) + 2
	if s.err != nil || end > len(s.b) || s.b[s.i] != '"' || s.b[end-1] != '"' || string(s.b[s.i+1:end-1]) != want {
		return false
	}
	s.i = end
	return true
}

// textValue reads a string, or with number a number's literal; any other
// value is skipped and reads as "".
func (s *scanner) textValue(number bool) string {
	var v string
	switch c := s.peek(); {
	case c == '"':
		s.str(&v)
	case number && (c == '-' || c >= '0' && c <= '9'):
		start := s.i
		s.number()
		v = string(s.b[start:s.i])
	default:
		s.skip()
	}
	return v
}

var errNotObject = errors.New("body is not a JSON object")

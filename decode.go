package main

import (
	"encoding/json"
	"errors"
	"fmt"
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

// scanner walks one JSON text.
type scanner struct {
	b     []byte
	i     int
	depth int
}

// syntaxError says where a body stops being JSON.
type syntaxError struct {
	msg string
	off int
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at offset %d: %s", e.off, e.msg)
}

func (s *scanner) fail(msg string) error { return &syntaxError{msg, s.i} }

func (s *scanner) ws() {
	for s.i < len(s.b) {
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

// object calls field for each key of the object that starts here; field
// must consume the key's value with one of the value methods.
func (s *scanner) object(field func(key []byte) error) error {
	if s.peek() != '{' {
		return s.fail("want an object")
	}
	if s.depth++; s.depth > maxDepth {
		return s.fail("nested too deeply")
	}
	s.i++
	if s.peek() == '}' {
		s.i++
		s.depth--
		return nil
	}
	for {
		key, err := s.rawString()
		if err != nil {
			return err
		}
		if s.peek() != ':' {
			return s.fail("want ':' after an object key")
		}
		s.i++
		if err := field(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
			if s.peek() != '"' {
				return s.fail("want an object key")
			}
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return s.fail("want ',' or '}' in an object")
		}
	}
}

// rawString reads a string token and returns its contents still escaped.
// Keys compare as raw bytes: a key written with escapes matches nothing.
func (s *scanner) rawString() ([]byte, error) {
	if s.peek() != '"' {
		return nil, s.fail("want a string")
	}
	s.i++
	start := s.i
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], nil
		case c == '\\':
			if err := s.escape(); err != nil {
				return nil, err
			}
		case c < 0x20:
			return nil, s.fail("control character in a string")
		default:
			s.i++
		}
	}
	return nil, s.fail("unterminated string")
}

func (s *scanner) escape() error {
	s.i++ // the backslash
	if s.i >= len(s.b) {
		return s.fail("unterminated string")
	}
	switch s.b[s.i] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i++
	case 'u':
		if s.i+5 > len(s.b) {
			return s.fail("short \\u escape")
		}
		for _, h := range s.b[s.i+1 : s.i+5] {
			if !isHex(h) {
				return s.fail("bad \\u escape")
			}
		}
		s.i += 5
	default:
		return s.fail("bad escape")
	}
	return nil
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// str reads a string value (or null, which leaves it empty, as
// encoding/json does).
func (s *scanner) str(dst *string) error {
	if s.peek() == 'n' {
		return s.literal("null")
	}
	start := s.i
	raw, err := s.rawString()
	if err != nil {
		return err
	}
	for _, c := range raw {
		if c == '\\' || c >= 0x80 {
			// Escapes and non-ASCII: encoding/json's own rules (surrogates,
			// invalid UTF-8) apply. Rare in a callback.
			return json.Unmarshal(s.b[start:s.i], dst)
		}
	}
	*dst = string(raw)
	return nil
}

// obj reads an object value with field, or null.
func (s *scanner) obj(field func(key []byte) error) error {
	if s.peek() == 'n' {
		return s.literal("null")
	}
	return s.object(field)
}

// raw reads any value and returns its bytes; null yields nil, as it does
// for a json.RawMessage.
func (s *scanner) raw() ([]byte, error) {
	s.ws()
	start := s.i
	if err := s.skip(); err != nil {
		return nil, err
	}
	if string(s.b[start:s.i]) == "null" {
		return nil, nil
	}
	return s.b[start:s.i], nil
}

// skip validates and passes over one value.
func (s *scanner) skip() error {
	switch c := s.peek(); {
	case c == '{':
		return s.object(func([]byte) error { return s.skip() })
	case c == '[':
		if s.depth++; s.depth > maxDepth {
			return s.fail("nested too deeply")
		}
		s.i++
		if s.peek() == ']' {
			s.i++
			s.depth--
			return nil
		}
		for {
			if err := s.skip(); err != nil {
				return err
			}
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				s.depth--
				return nil
			default:
				return s.fail("want ',' or ']' in an array")
			}
		}
	case c == '"':
		_, err := s.rawString()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return s.fail("want a value")
}

func (s *scanner) literal(word string) error {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return s.fail("want " + word)
	}
	s.i += len(word)
	return nil
}

func (s *scanner) digits() int {
	n := 0
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *scanner) number() error {
	if s.b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(s.b) && s.b[s.i] == '0':
		s.i++
	case s.digits() == 0:
		return s.fail("bad number")
	}
	if s.i < len(s.b) && s.b[s.i] == '.' {
		s.i++
		if s.digits() == 0 {
			return s.fail("bad number")
		}
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if s.digits() == 0 {
			return s.fail("bad number")
		}
	}
	return nil
}

// end checks that nothing but white space follows the value.
func (s *scanner) end() error {
	if s.peek() != 0 || s.i < len(s.b) {
		return s.fail("data after the JSON value")
	}
	return nil
}

// decodeInbound decodes a callback body or decrypted envelope into in.
func decodeInbound(body []byte, in *inbound) error {
	if !isObject(body) {
		return errNotObject
	}
	s := &scanner{b: body}
	err := s.object(func(key []byte) error {
		switch string(key) {
		case "encrypt":
			var e string
			if s.peek() == 'n' {
				return s.literal("null")
			}
			if err := s.str(&e); err != nil {
				return err
			}
			in.Encrypt = &e
			return nil
		case "type":
			return s.str(&in.Type)
		case "challenge":
			return s.str(&in.Challenge)
		case "token":
			return s.str(&in.Token)
		case "schema":
			return s.str(&in.Schema)
		case "header":
			h := &in.Header
			return s.obj(func(key []byte) error {
				switch string(key) {
				case "event_id":
					return s.str(&h.EventID)
				case "token":
					return s.str(&h.Token)
				case "event_type":
					return s.str(&h.EventType)
				case "tenant_key":
					return s.str(&h.TenantKey)
				}
				return s.skip()
			})
		case "event":
			return s.obj(func(key []byte) error { return decodeEvent(s, key, in) })
		case "open_id":
			return s.str(&in.OpenID)
		case "user_id":
			return s.str(&in.UserID)
		case "open_message_id":
			return s.str(&in.OpenMessageID)
		case "open_chat_id":
			return s.str(&in.OpenChatID)
		case "tenant_key":
			return s.str(&in.TenantKey)
		case "action":
			return decodeAction(s, &in.Action)
		}
		return s.skip()
	})
	if err == nil {
		err = s.end()
	}
	if err != nil {
		return fmt.Errorf("body does not have the shape of a card callback: %w", err)
	}
	return nil
}

func decodeEvent(s *scanner, key []byte, in *inbound) error {
	e := &in.Event
	switch string(key) {
	case "operator":
		op := &e.Operator
		return s.obj(func(key []byte) error {
			switch string(key) {
			case "tenant_key":
				return s.str(&op.TenantKey)
			case "user_id":
				return s.str(&op.UserID)
			case "open_id":
				return s.str(&op.OpenID)
			case "union_id":
				return s.str(&op.UnionID)
			}
			return s.skip()
		})
	case "token":
		return s.str(&e.Token)
	case "action":
		return decodeAction(s, &e.Action)
	case "context":
		return s.obj(func(key []byte) error {
			switch string(key) {
			case "open_message_id":
				return s.str(&e.Context.OpenMessageID)
			case "open_chat_id":
				return s.str(&e.Context.OpenChatID)
			}
			return s.skip()
		})
	}
	return s.skip()
}

func decodeAction(s *scanner, a *wireAction) error {
	return s.obj(func(key []byte) error {
		switch string(key) {
		case "value":
			v, err := s.raw()
			if v != nil {
				// Copied: the value outlives the body's buffer.
				a.Value = append(json.RawMessage(nil), v...)
			}
			return err
		case "tag":
			return s.str(&a.Tag)
		}
		return s.skip()
	})
}

// decodeButton reads button_type and button_id of an action.value object:
// a string, or for button_id a number's literal text. Anything else leaves
// them empty: such a click is not ours to act on.
func decodeButton(value []byte) (buttonType, buttonID string, err error) {
	s := &scanner{b: value}
	err = s.object(func(key []byte) error {
		switch string(key) {
		case "button_type":
			return s.textValue(&buttonType, false)
		case "button_id":
			return s.textValue(&buttonID, true)
		}
		return s.skip()
	})
	if err == nil {
		err = s.end()
	}
	return buttonType, buttonID, err
}

// textValue reads a string, or with number a number's literal; any other
// value is skipped and leaves dst empty.
func (s *scanner) textValue(dst *string, number bool) error {
	switch c := s.peek(); {
	case c == '"':
		return s.str(dst)
	case number && (c == '-' || c >= '0' && c <= '9'):
		start := s.i
		err := s.number()
		*dst = string(s.b[start:s.i])
		return err
	}
	*dst = ""
	return s.skip()
}

var errNotObject = errors.New("body is not a JSON object")

package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// FuzzDecodeInbound holds the fast decoder to encoding/json: it accepts
// only valid JSON, and wherever encoding/json decodes a body into inbound
// it reads the same fields (encoding/json also matches keys written with
// escapes or in another case; those bodies are only checked for validity).
func FuzzDecodeInbound(f *testing.F) {
	v := loadVectors(f)
	f.Add([]byte(v.LegacySignature.Body))
	f.Add([]byte(v.DecryptChallenge.Plaintext))
	f.Add([]byte(v.DecryptAligned.Plaintext))
	f.Add(newBody(testClick("om_1"), "tok", "cli", testTime))
	f.Add(legacyBody(testClick("om_1")))
	f.Add([]byte(`{"encrypt":"abc"}`))
	f.Add([]byte(`{"open_id":"ou_\u00e9\ud83d\ude00","action":{"value":{"button_type":"public_publish","button_id":-1.5e3},"tag":null}}`))
	f.Add([]byte(`{"schema":"2.0","event":{"action":{"value":"x"}},"header":null,"x":[1,{"a":[]},true,false,null,"s"]}`))
	f.Add([]byte(`{"a":1}   `))
	f.Add([]byte(`{"a":01}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var got inbound
		err := decodeInbound(data, &got)
		if err == nil && !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		var want inbound
		werr := json.Unmarshal(data, &want)
		if werr != nil || !isObject(data) {
			return
		}
		if err != nil {
			// encoding/json took it. Only a field of the wrong type
			// matched by case or escape (which encoding/json reads and
			// this decoder skips) may explain a difference.
			if !inexactKeys(data) {
				t.Fatalf("refused %q: %v", data, err)
			}
			return
		}
		if inexactKeys(data) {
			return
		}
		// The button read in the same pass is what a reading of the value
		// encoding/json found gives.
		for _, a := range []struct{ got, want *wireAction }{{&got.Action, &want.Action}, {&got.Event.Action, &want.Event.Action}} {
			if isObject(a.want.Value) {
				a.want.button, _ = decodeButton(a.want.Value)
			}
		}
		if string(want.Action.Value) == "null" {
			want.Action.Value = nil
		}
		if string(want.Event.Action.Value) == "null" {
			want.Event.Action.Value = nil
		}
		for _, raw := range []*json.RawMessage{&got.Action.Value, &got.Event.Action.Value, &want.Action.Value, &want.Event.Action.Value} {
			if *raw != nil {
				var c bytes.Buffer
				json.Compact(&c, *raw)
				*raw = c.Bytes()
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\ngot  %+v\nwant %+v", data, got, want)
		}
	})
}

var testTime = time.Unix(1700000000, 0)

// inexactKeys reports whether an object key in data is written with an
// escape or matches a field name only when case is ignored.
func inexactKeys(data []byte) bool {
	names := []string{"encrypt", "type", "challenge", "token", "schema", "header", "event", "event_id", "event_type",
		"tenant_key", "operator", "user_id", "open_id", "union_id", "action", "context", "open_message_id", "open_chat_id", "value", "tag"}
	found := false
	var walk func(s *scanner)
	walk = func(s *scanner) {
		switch s.peek() {
		case '{':
			s.open('{')
			for first := true; s.more('}', &first); {
				key := s.key()
				if bytes.IndexByte(key, '\\') >= 0 {
					found = true
				}
				for _, n := range names {
					if string(key) != n && bytes.EqualFold(key, []byte(n)) {
						found = true
					}
				}
				walk(s)
			}
		case '[':
			s.open('[')
			for first := true; s.more(']', &first); {
				walk(s)
			}
		default:
			s.skip()
		}
	}
	walk(&scanner{b: data})
	return found
}

func TestDecodeButton(t *testing.T) {
	for _, tc := range []struct {
		value, typ, id string
		err            bool
	}{
		{`{"button_type":"public_publish","button_id":"b1"}`, "public_publish", "b1", false},
		{`{"button_id":12.5e1,"button_type":"x"}`, "x", "12.5e1", false},
		{`{"button_type":7,"button_id":true}`, "", "", false},
		{`{"button_type":"a\u0062"}`, "ab", "", false},
		{`{"button_type": "public_publish" , "button_id":"b1"}`, "public_publish", "b1", false},
		{`{"button_type":"public\u005fpublish"}`, "public_publish", "", false},
		{`{"button_type":"public_publish_all"}`, "public_publish_all", "", false},
		{`{"button_type":"public_publis"}`, "public_publis", "", false},
		{`{"button_type":"public_publish`, "", "", true},
		{`{"button_type":"x"} x`, "", "", true},
		{`{"button_type":}`, "", "", true},
	} {
		b, err := decodeButton([]byte(tc.value))
		if (err != nil) != tc.err || !tc.err && (b.typ != tc.typ || b.id != tc.id) {
			t.Errorf("%s: got %q %q %v, want %q %q error %v", tc.value, b.typ, b.id, err, tc.typ, tc.id, tc.err)
		}
		if tc.err {
			continue
		}
		// The same, read as the value of a click.
		var in inbound
		if err := decodeInbound([]byte(`{"action":{"value":`+tc.value+`}}`), &in); err != nil || in.Action.button != b {
			t.Errorf("%s in a click: got %+v %v, want %+v", tc.value, in.Action.button, err, b)
		}
	}
}

// decodeButton reads the button of an action.value object on its own.
func decodeButton(value []byte) (button, error) {
	s := scanner{b: value}
	b := s.button()
	return b, s.end()
}

func TestScannerRejects(t *testing.T) {
	for _, bad := range []string{`{`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`, `{"a":tru}`, `{"a":"\x"}`, `{"a":"` + "\x01" + `"}`,
		`{"a":-}`, `{"a":1.}`, `{"a":1e}`, `{"a":[1,]}`, `{"a":[1 2]}`, `{"a":"\u12"}`, `{"a":1}}`, `{"a":01}`} {
		var in inbound
		if err := decodeInbound([]byte(bad), &in); err == nil {
			t.Errorf("%q: accepted", bad)
		}
		if json.Valid([]byte(bad)) {
			t.Errorf("%q: the test expects invalid JSON", bad)
		}
	}
	deep := bytes.Repeat([]byte(`[`), maxDepth+1)
	var in inbound
	if err := decodeInbound(append([]byte(`{"a":`), deep...), &in); err == nil {
		t.Error("accepted nesting past the limit")
	}
}

func TestSpecial8FindsTheFirstByteToLookAt(t *testing.T) {
	needs := func(c byte) bool { return c == '"' || c == '\\' || c < 0x20 || c >= 0x80 }
	// first is where rawString's scan must stop in b: the first byte that
	// needs a look, or 8.
	first := func(b [8]byte) int {
		for i, c := range b {
			if needs(c) {
				return i
			}
		}
		return 8
	}
	check := func(b [8]byte) {
		t.Helper()
		m := special8(binary.LittleEndian.Uint64(b[:]))
		got := 8
		if m != 0 {
			got = bits.TrailingZeros64(m) / 8
		}
		if want := first(b); got != want {
			t.Fatalf("%q (% x): first byte to look at %d, want %d", b, b, got, want)
		}
	}
	// Every byte at every place, among plain text.
	for c := range 256 {
		for pos := range 8 {
			for _, fill := range []byte{'a', ' ', '~', '!', '#', '[', ']'} {
				var b [8]byte
				for i := range b {
					b[i] = fill
				}
				b[pos] = byte(c)
				check(b)
			}
		}
	}
	// Words mixing the bytes next to the borders the tricks test, where a
	// borrow out of one byte could mark the next.
	edges := []byte{0x00, 0x01, 0x1f, 0x20, 0x21, '!', '"', '#', '[', '\\', ']', 0x7e, 0x7f, 0x80, 0x81, 0xff}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		var b [8]byte
		for i := range b {
			b[i] = edges[rng.IntN(len(edges))]
		}
		check(b)
	}
}

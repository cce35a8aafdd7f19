package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
)

// Generation tells the two callback formats apart (PROTOCOL §1).
type Generation uint8

const (
	// Legacy is the flat card.action.trigger_v1 body, signed with SHA-1.
	Legacy Generation = iota + 1
	// New is the schema 2.0 card.action.trigger event.
	New
)

func (g Generation) String() string {
	switch g {
	case Legacy:
		return "legacy"
	case New:
		return "new"
	}
	return "unknown"
}

// PublishButton is the button_type whose click runs the business logic.
const PublishButton = "public_publish"

// Click is one button click, whatever generation delivered it.
type Click struct {
	Generation Generation
	OpenID     string
	UserID     string
	UnionID    string // new generation only
	MessageID  string // open_message_id
	ChatID     string // open_chat_id
	TenantKey  string
	// Token is the card-update credential for this click (c-…). It is a
	// secret for 30 minutes and is never logged.
	Token string
	Tag   string
	// Value is action.value exactly as received: usually an object, but a
	// string or absent are allowed by the platform.
	Value      json.RawMessage
	ButtonType string // action.value.button_type when it is a string
	ButtonID   string // action.value.button_id, a string or a number
	EventID    string // header.event_id, new generation only
}

// Key identifies what a click acts on: the same button on the same message,
// whichever generation delivered it (PROTOCOL §10).
func (c Click) Key() ClickKey { return ClickKey{ButtonType: c.ButtonType, ButtonID: c.ButtonID} }

// IsPublish reports whether the click asks for the business logic.
func (c Click) IsPublish() bool { return c.ButtonType == PublishButton }

// Operator returns the ids of the person who clicked, for allow lists and logs.
func (c Click) Operator() []string { return []string{c.OpenID, c.UserID, c.UnionID} }

// ClickKey names one button of a message.
type ClickKey struct {
	ButtonType string
	ButtonID   string
}

// inbound is the union of every body the callback URL receives, decoded in
// one pass by decodeInbound (decode.go). Fields that are not ours to read
// are left undecoded. The json tags give encoding/json the same view: the
// fuzz test holds the two decoders to each other.
type inbound struct {
	Encrypt sealed `json:"encrypt"`

	// Challenge (PROTOCOL §2.3); Token doubles as the legacy update token.
	Type      string `json:"type"`
	Challenge string `json:"challenge"`
	Token     string `json:"token"`

	// New generation (PROTOCOL §2.2).
	Schema string `json:"schema"`
	Header struct {
		EventID   string `json:"event_id"`
		Token     string `json:"token"`
		EventType string `json:"event_type"`
		TenantKey string `json:"tenant_key"`
	} `json:"header"`
	Event struct {
		Operator struct {
			TenantKey string `json:"tenant_key"`
			UserID    string `json:"user_id"`
			OpenID    string `json:"open_id"`
			UnionID   string `json:"union_id"`
		} `json:"operator"`
		Token   string     `json:"token"`
		Action  wireAction `json:"action"`
		Context struct {
			OpenMessageID string `json:"open_message_id"`
			OpenChatID    string `json:"open_chat_id"`
		} `json:"context"`
	} `json:"event"`

	// Legacy (PROTOCOL §2.1).
	OpenID        string     `json:"open_id"`
	UserID        string     `json:"user_id"`
	OpenMessageID string     `json:"open_message_id"`
	OpenChatID    string     `json:"open_chat_id"`
	TenantKey     string     `json:"tenant_key"`
	Action        wireAction `json:"action"`
}

// sealed is the encrypt field: the base64 text of an envelope, nil when
// the field is absent or null. decodeInbound leaves it pointing into the
// body it was decoded from, so it is read before that body's buffer is
// reused.
type sealed []byte

func (e *sealed) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*e = append(sealed{}, s...)
	return nil
}

type wireAction struct {
	Value json.RawMessage `json:"value"`
	Tag   string          `json:"tag"`
	// button is what the decoder read of an object value, in the same
	// pass (encoding/json leaves it empty).
	button button
}

// button is the button_type and button_id of an action.value object.
type button struct{ typ, id string }

// Kinds of inbound body.
type kind uint8

const (
	kindChallenge kind = iota + 1
	kindLegacy
	kindNew
)

// isObject reports whether b starts (after white space) like a JSON object.
func isObject(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return len(b) > 0 && b[0] == '{'
}

func (in *inbound) kind() kind {
	switch {
	case in.Type == "url_verification":
		return kindChallenge
	case in.Schema == "2.0":
		return kindNew
	}
	return kindLegacy
}

// click builds the transport-free click model from a decoded body.
func (in *inbound) click(k kind) (Click, error) {
	var c Click
	var a wireAction
	if k == kindNew {
		op := in.Event.Operator
		c = Click{
			Generation: New, OpenID: op.OpenID, UserID: op.UserID, UnionID: op.UnionID,
			MessageID: in.Event.Context.OpenMessageID, ChatID: in.Event.Context.OpenChatID,
			TenantKey: op.TenantKey, Token: in.Event.Token, EventID: in.Header.EventID,
		}
		if c.TenantKey == "" {
			c.TenantKey = in.Header.TenantKey
		}
		a = in.Event.Action
	} else {
		c = Click{
			Generation: Legacy, OpenID: in.OpenID, UserID: in.UserID,
			MessageID: in.OpenMessageID, ChatID: in.OpenChatID,
			TenantKey: in.TenantKey, Token: in.Token,
		}
		a = in.Action
	}
	c.Tag, c.Value = a.Tag, a.Value
	// A string value, a missing value or a non-string button_type leave
	// the button empty: such a click is not ours to act on, which is not
	// an error.
	c.ButtonType, c.ButtonID = a.button.typ, a.button.id
	if c.IsPublish() && c.MessageID == "" {
		return Click{}, errors.New("click has no open_message_id")
	}
	return c, nil
}

// Texts of the card states, by locale. A locale not listed uses "".
type phrase map[string]string

func (p phrase) in(locale string) string {
	if s, ok := p[locale]; ok {
		return s
	}
	return p[""]
}

var (
	donePhrase = phrase{"zh_cn": "已完成", "zh_hk": "已完成", "zh_tw": "已完成", "ja_jp": "完了", "": "Done"}
	progPhrase = phrase{"zh_cn": "全量发布进行中…", "zh_hk": "全量发布进行中…", "zh_tw": "全量发布进行中…", "": "Full release in progress…"}
)

func failPhrase(reason string) phrase {
	zh := "全量发布失败：" + reason
	return phrase{"zh_cn": zh, "zh_hk": zh, "zh_tw": zh, "": "Full release failed: " + reason}
}

// v1Div is the JSON 1.0 element that carries a state's text. is_short is
// written out: the platform wants it (PROTOCOL §6).
func v1Div(text string) json.RawMessage {
	type textObj struct {
		Tag     string `json:"tag"`
		Content string `json:"content"`
	}
	type field struct {
		IsShort bool    `json:"is_short"`
		Text    textObj `json:"text"`
	}
	return mustMarshal(struct {
		Tag    string  `json:"tag"`
		Fields []field `json:"fields"`
	}{"div", []field{{false, textObj{"lark_md", text}}}})
}

// v2Markdown is the JSON 2.0 element that carries a state's text.
func v2Markdown(text string) json.RawMessage {
	return mustMarshal(struct {
		Tag     string `json:"tag"`
		Content string `json:"content"`
	}{"markdown", text})
}

func mustMarshal(v any) json.RawMessage {
	b, err := marshalNoEscape(v)
	if err != nil {
		panic(err) // only called with types that always marshal
	}
	return b
}

// marshalNoEscape is json.Marshal without HTML escaping, so that a failure
// reason such as "a < b" reads as written in the client.
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// errBadCard says a stored card cannot be read as a card.
var errBadCard = errors.New("stored card is not a JSON object")

// rewriteCard returns card with its element lists replaced by (or, with
// prepend, led by) one element carrying texts in each list's language:
// every locale of i18n_elements, else elements, else a JSON 2.0 card's
// body.elements. Every other key is kept, since an update replaces the whole
// card (PROTOCOL §6). A nil card yields a card holding only the element.
func rewriteCard(card []byte, texts phrase, prepend bool) ([]byte, error) {
	if card == nil {
		return marshalNoEscape(map[string]any{"elements": []json.RawMessage{v1Div(texts.in("zh_cn"))}})
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(card, &top); err != nil || top == nil {
		return nil, errBadCard
	}
	switch {
	case isV2(top):
		var body map[string]json.RawMessage
		if json.Unmarshal(top["body"], &body) != nil || body == nil {
			body = map[string]json.RawMessage{}
		}
		body["elements"] = withElement(body["elements"], v2Markdown(texts.in("zh_cn")), prepend)
		top["body"] = mustMarshal(body)
	case top["i18n_elements"] != nil:
		var locales map[string]json.RawMessage
		if json.Unmarshal(top["i18n_elements"], &locales) != nil || locales == nil {
			locales = map[string]json.RawMessage{"zh_cn": nil}
		}
		for loc, els := range locales {
			locales[loc] = withElement(els, v1Div(texts.in(loc)), prepend)
		}
		top["i18n_elements"] = mustMarshal(locales)
	default:
		top["elements"] = withElement(top["elements"], v1Div(texts.in("zh_cn")), prepend)
	}
	return marshalNoEscape(top)
}

func isV2(top map[string]json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(top["schema"]), []byte(`"2.0"`))
}

// withElement returns [el] or, with prepend, [el, list...].
func withElement(list json.RawMessage, el json.RawMessage, prepend bool) json.RawMessage {
	els := []json.RawMessage{el}
	if prepend {
		var old []json.RawMessage
		if json.Unmarshal(list, &old) == nil {
			els = append(els, old...)
		}
	}
	return mustMarshal(els)
}

// doneCard, progressCard and failedCard are the three states a click shows.
func doneCard(card []byte) ([]byte, error)     { return rewriteCard(card, donePhrase, false) }
func progressCard(card []byte) ([]byte, error) { return rewriteCard(card, progPhrase, false) }

// failedCard keeps the card's buttons so the click can be retried.
func failedCard(card []byte, reason string) ([]byte, error) {
	return rewriteCard(card, failPhrase(reason), true)
}

// render is a state of card for a user to see: a card that cannot be
// read as a card (nothing the admin API stores) shows as the bare state,
// which beats showing the user nothing.
func render(state func([]byte) ([]byte, error), card []byte) []byte {
	out, err := state(card)
	if err != nil {
		out, _ = state(nil)
	}
	return out
}

func renderDone(card []byte) []byte     { return render(doneCard, card) }
func renderProgress(card []byte) []byte { return render(progressCard, card) }
func renderFailed(card []byte, reason string) []byte {
	return render(func(c []byte) ([]byte, error) { return failedCard(c, reason) }, card)
}

// isExclusive reports whether an update of card is shown only to the
// operator, which makes the delayed update need open_ids (PROTOCOL §5, §7).
func isExclusive(card []byte) bool {
	if card == nil {
		return true
	}
	var c struct {
		Schema string `json:"schema"`
		Config struct {
			UpdateMulti bool `json:"update_multi"`
		} `json:"config"`
	}
	if json.Unmarshal(card, &c) != nil {
		return true
	}
	return c.Schema != "2.0" && !c.Config.UpdateMulti
}

// Toasts (PROTOCOL §5).
type toast struct {
	Type    string            `json:"type"`
	Content string            `json:"content"`
	I18n    map[string]string `json:"i18n"`

	// The toast's part of an answer, encoded once: the whole answer when
	// there is no card, and what precedes the card when there is one.
	alone, withCard []byte
}

func newToast(typ, zh, en string) toast {
	t := toast{Type: typ, Content: zh, I18n: map[string]string{"zh_cn": zh, "en_us": en}}
	enc := mustMarshal(t)
	t.alone = slices.Concat([]byte(`{"toast":`), enc, []byte(`}`))
	t.withCard = slices.Concat([]byte(`{"toast":`), enc, []byte(`,"card":{"type":"raw","data":`))
	return t
}

var (
	toastDone       = newToast("success", "已完成", "Done")
	toastRepeat     = newToast("info", "已完成", "Already done")
	toastProgress   = newToast("info", "全量发布进行中…", "Full release in progress…")
	toastNotAllowed = newToast("error", "你没有权限执行此操作", "You are not allowed to do this")
)

func toastFailed(reason string) toast {
	return newToast("error", "全量发布失败："+reason, "Full release failed: "+reason)
}

// answerBody is an answer in parts that are written one after the other,
// so that a stored card is sent as it is stored, not copied into a new
// buffer.
type answerBody struct{ head, card, tail []byte }

var (
	emptyAnswer  = []byte(`{}`)
	rawCardHead  = []byte(`{"card":{"type":"raw","data":`)
	rawCardClose = []byte(`}}`)
)

func (b answerBody) len() int { return len(b.head) + len(b.card) + len(b.tail) }

// bytes joins the parts.
func (b answerBody) bytes() []byte { return slices.Concat(b.head, b.card, b.tail) }

// answer is the synchronous reply to a click: for the legacy generation
// the card itself (with the toast at the top level when there is no card),
// for the new one {"toast":…,"card":{"type":"raw","data":…}}. A nil card
// leaves the card unchanged; a nil toast shows none.
func answer(g Generation, t *toast, card []byte) answerBody {
	switch {
	case g == Legacy && card != nil:
		return answerBody{card: card}
	case card == nil && t == nil:
		return answerBody{head: emptyAnswer}
	case card == nil:
		return answerBody{head: t.alone}
	case t == nil:
		return answerBody{head: rawCardHead, card: card, tail: rawCardClose}
	}
	return answerBody{head: t.withCard, card: card, tail: rawCardClose}
}

// truncateReason keeps a failure reason within 200 characters.
func truncateReason(s string) string {
	r := []rune(s)
	if len(r) > 200 {
		return string(r[:199]) + "…"
	}
	return s
}

package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// This file builds callbacks exactly as the platform sends them. The
// simulator and the load generator use it, and so do the tests, which
// check it against the published vectors.

// platformRequest is one callback ready to send.
type platformRequest struct {
	Body   []byte
	Header http.Header
}

// legacyBody is the flat card.action.trigger_v1 body of a click (PROTOCOL §2.1).
func legacyBody(c Click) []byte {
	b, _ := marshalNoEscape(struct {
		OpenID        string `json:"open_id"`
		UserID        string `json:"user_id,omitempty"`
		OpenMessageID string `json:"open_message_id"`
		OpenChatID    string `json:"open_chat_id,omitempty"`
		TenantKey     string `json:"tenant_key"`
		Token         string `json:"token"`
		Action        any    `json:"action"`
	}{c.OpenID, c.UserID, c.MessageID, c.ChatID, c.TenantKey, c.Token, wireActionOf(c)})
	return b
}

// newBody is the schema 2.0 card.action.trigger body of a click (PROTOCOL §2.2).
func newBody(c Click, verificationToken, appID string, created time.Time) []byte {
	type operator struct {
		TenantKey string `json:"tenant_key"`
		UserID    string `json:"user_id,omitempty"`
		OpenID    string `json:"open_id"`
		UnionID   string `json:"union_id,omitempty"`
	}
	type context struct {
		OpenMessageID string `json:"open_message_id"`
		OpenChatID    string `json:"open_chat_id,omitempty"`
	}
	type event struct {
		Operator operator `json:"operator"`
		Token    string   `json:"token"`
		Action   any      `json:"action"`
		Host     string   `json:"host"`
		Context  context  `json:"context"`
	}
	type header struct {
		EventID    string `json:"event_id"`
		Token      string `json:"token"`
		CreateTime string `json:"create_time"`
		EventType  string `json:"event_type"`
		TenantKey  string `json:"tenant_key"`
		AppID      string `json:"app_id"`
	}
	b, _ := marshalNoEscape(struct {
		Schema string `json:"schema"`
		Header header `json:"header"`
		Event  event  `json:"event"`
	}{"2.0",
		header{c.EventID, verificationToken, strconv.FormatInt(created.UnixMicro(), 10), "card.action.trigger", c.TenantKey, appID},
		event{operator{c.TenantKey, c.UserID, c.OpenID, c.UnionID}, c.Token, wireActionOf(c), "im_message", context{c.MessageID, c.ChatID}},
	})
	return b
}

func wireActionOf(c Click) any {
	return struct {
		Value json.RawMessage `json:"value,omitempty"`
		Tag   string          `json:"tag"`
	}{c.Value, c.Tag}
}

// challengeBody is a URL verification (PROTOCOL §2.3).
func challengeBody(challenge, verificationToken string) []byte {
	b, _ := marshalNoEscape(map[string]string{"challenge": challenge, "token": verificationToken, "type": "url_verification"})
	return b
}

// sealKind is what seal makes of a plaintext body.
type sealKind uint8

const (
	sealClick     sealKind = iota // signed, encrypted as the platform encrypts its generation
	sealEncrypted                 // signed and encrypted whatever the generation (an SDK-era legacy app)
	sealChallenge                 // never signed; encrypted when an Encrypt Key is set
)

// seal turns a plaintext body into what the platform sends. With an
// Encrypt Key the new generation and the challenge are encrypted; the
// legacy generation is documented as never encrypted (PROTOCOL §1), though
// the server accepts it encrypted too. Clicks are signed as their
// generation signs. ts and nonce are the signature headers' values.
func (s *signer) seal(gen Generation, plain []byte, kind sealKind, ts, nonce string) platformRequest {
	body := plain
	if s.block != nil && (gen == New || kind != sealClick) {
		iv := make([]byte, 16)
		rand.Read(iv)
		body, _ = json.Marshal(map[string]string{"encrypt": s.encrypt(plain, iv)})
	}
	h := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	if kind != sealChallenge {
		var sig []byte
		switch {
		case gen == Legacy && len(s.verificationToken) > 0:
			sig = s.legacySignature(ts, nonce, body)
		case gen == New && s.block != nil:
			sig = s.newSignature(ts, nonce, body)
		}
		h.Set("X-Lark-Request-Timestamp", ts)
		h.Set("X-Lark-Request-Nonce", nonce)
		if sig != nil {
			h.Set("X-Lark-Signature", hex.EncodeToString(sig))
		}
	}
	return platformRequest{Body: body, Header: h}
}

// publishValue is action.value of the 完成「全量发布」 button.
func publishValue(buttonID string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"button_type": PublishButton, "button_id": buttonID})
	return b
}

// randomID returns n random bytes in hex, for event ids, nonces and tokens.
func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

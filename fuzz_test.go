package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// FuzzCallback feeds arbitrary bodies and headers to the callback handler.
// sign chooses the signature: 0 none, 1 legacy, 2 new, 3 the given sig.
// However the input looks, the server never panics, never answers 5xx,
// never runs the logic or answers a card for an unverified request.
func FuzzCallback(f *testing.F) {
	v := loadVectors(f)
	e0 := &testEnv{cfg: baseConfig(), signer: newSigner(testToken, testKey)}
	e0.cfg.encryptKey = testKey
	for _, g := range generations {
		c := testClick("om_1")
		f.Add(legacyBody(c), uint8(1), false, "")
		f.Add(newBody(c, testToken, "cli", time.Unix(1700000000, 0)), uint8(2), true, "")
		f.Add(newBody(c, testToken, "cli", time.Unix(1700000000, 0)), uint8(0), false, "")
		f.Add(e0.request(g, c).Body, uint8(3), false, "00")
	}
	f.Add(challengeBody("ch", testToken), uint8(0), false, "")
	f.Add(challengeBody("ch", testToken), uint8(0), true, "")
	f.Add([]byte(v.LegacySignature.Body), uint8(1), false, "")
	f.Add([]byte(`{"encrypt":"`+v.DecryptChallenge.Encrypt+`"}`), uint8(2), false, "")
	f.Add([]byte(`{"encrypt":"AAAA"}`), uint8(2), false, "")
	f.Add([]byte(`{"schema":"2.0","event":{"action":{"value":"x"}}}`), uint8(0), false, "")
	f.Add([]byte(`[]`), uint8(3), false, "zz")

	f.Fuzz(func(t *testing.T, body []byte, sign uint8, encrypt bool, sig string) {
		var l countingLogic
		e := newEnv(t, l.logic, withKey)
		e.bodiesMayHoldSecrets = true
		e.putCard("om_1", []byte(`{"elements":[]}`), "")
		if encrypt {
			body, _ = json.Marshal(map[string]string{"encrypt": e.signer.encrypt(body, make([]byte, 16))})
		}
		h := http.Header{"X-Lark-Request-Timestamp": {"1"}, "X-Lark-Request-Nonce": {"n"}}
		switch sign % 4 {
		case 1:
			sig = hex.EncodeToString(e.signer.legacySignature("1", "n", body))
		case 2:
			sig = hex.EncodeToString(e.signer.newSignature("1", "n", body))
		}
		if sign%4 != 0 {
			h.Set("X-Lark-Signature", sig)
		}
		verified := signatureMatches(sig, e.signer.legacySignature("1", "n", body)) ||
			signatureMatches(sig, e.signer.newSignature("1", "n", body))

		rec := e.do("POST", "/webhook/card", body, h)
		if rec.Code >= 500 {
			t.Fatalf("got %d %s", rec.Code, rec.Body)
		}
		if verified {
			return
		}
		if l.n.Load() != 0 {
			t.Fatal("the logic ran for an unverified request")
		}
		if rec.Code < 300 {
			// Unsigned, only a challenge with the right token may pass.
			var ch struct{ Challenge *string }
			if json.Unmarshal(rec.Body.Bytes(), &ch) != nil || ch.Challenge == nil || bytes.Contains(rec.Body.Bytes(), []byte(`"card"`)) {
				t.Fatalf("an unverified request got %d %s", rec.Code, rec.Body)
			}
		}
	})
}

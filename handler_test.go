package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	testToken = "vtoken-0123456789"
	testKey   = "ekey-0123456789"
	testAdmin = "admin-0123456789"
)

// syncBuffer collects logs written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testEnv is one server built as run builds it, served in process.
type testEnv struct {
	t       *testing.T
	cfg     *config
	store   Store
	runner  *runner
	handler http.Handler
	signer  *signer // signs and encrypts like the platform, with cfg's secrets
	// handlers counts the handlers still running (see serve).
	handlers sync.WaitGroup
	logs     *syncBuffer
	sink     *logSink
	metrics  *metrics
	// bodiesMayHoldSecrets turns off the check that no secret reaches the
	// logs, for fuzzed bodies that may copy a secret into a field the log
	// line shows (an open_id).
	bodiesMayHoldSecrets bool
}

// countingLogic succeeds and counts its runs.
type countingLogic struct{ n atomic.Int32 }

func (l *countingLogic) logic(ctx context.Context, c Click) error {
	l.n.Add(1)
	return nil
}

func baseConfig() *config {
	return &config{
		addr: "127.0.0.1:0", path: "/webhook/card", verificationToken: testToken, adminToken: testAdmin,
		logFormat: "text", logicTimeout: time.Minute, respondWithin: time.Minute, shutdownTimeout: time.Minute,
		feishuURL: "https://open.feishu.cn",
	}
}

func newEnv(t *testing.T, logic Logic, opts ...func(*config)) *testEnv {
	t.Helper()
	cfg := baseConfig()
	for _, o := range opts {
		o(cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	return newEnvWith(t, cfg, newMemStore(), logic, nil)
}

func newEnvWith(t *testing.T, cfg *config, st Store, logic Logic, fc *feishuClient) *testEnv {
	t.Helper()
	logs := &syncBuffer{}
	sink := newLogSink(logs)
	log := newLogger("text", sink)
	m := newMetrics()
	m.storedRecord = st.Len
	if fc != nil {
		fc.metrics = m
	}
	rn := newRunner(st, logic, log, runnerConfig{allow: cfg.allow, respondWithin: cfg.respondWithin, logicTimeout: cfg.logicTimeout, metrics: m}, pusherOf(fc))
	e := &testEnv{
		t: t, cfg: cfg, store: st, runner: rn, logs: logs,
		handler: newServer(log, cfg, st, rn, fc, m), metrics: m, sink: sink,
		signer: newSigner(cfg.verificationToken, cfg.encryptKey),
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rn.shutdown(ctx)
		e.handlers.Wait()
		sink.Flush()
		if e.bodiesMayHoldSecrets {
			return
		}
		for _, secret := range []string{testToken, testKey, testAdmin, "c-tok"} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("a secret (%s) reached the logs:\n%s", secret, logs)
			}
		}
	})
	return e
}

func withKey(c *config) { c.encryptKey = testKey }
func devMode(c *config) { c.verificationToken = "" }
func noAdmin(c *config) { c.adminToken = "" }
func withAllow(ids ...string) func(*config) {
	return func(c *config) { c.allow = ids }
}

// do sends one request through the whole HTTP surface.
func (e *testEnv) do(method, path string, body []byte, h http.Header) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	if req.Header.Get("Authorization") == "" && !strings.HasPrefix(path, e.cfg.path) {
		req.Header.Set("Authorization", "Bearer "+testAdmin)
	}
	return e.serve(req, nil)
}

// serve hands req to the handler and returns the answer once it is
// written: when the handler returns, or when it flushes an answer before
// that, as a first click whose logic outlasts the budget does while the
// logic goes on on the handler's goroutine. onWrite, if not nil, is called
// after every write of the answer. The test's cleanup waits for the
// handlers still running.
func (e *testEnv) serve(req *http.Request, onWrite func()) *httptest.ResponseRecorder {
	rec := &liveRecorder{ResponseRecorder: httptest.NewRecorder(), onWrite: onWrite, flushed: make(chan struct{})}
	returned := make(chan struct{})
	e.handlers.Add(1)
	go func() {
		defer e.handlers.Done()
		defer close(returned)
		e.handler.ServeHTTP(rec, req)
	}()
	select {
	case <-returned:
	case <-rec.flushed:
	}
	return rec.ResponseRecorder
}

// liveRecorder is a ResponseRecorder that tells when it is flushed and,
// through onWrite, when it is written to.
type liveRecorder struct {
	*httptest.ResponseRecorder
	onWrite func()
	once    sync.Once
	flushed chan struct{}
}

func (r *liveRecorder) Write(p []byte) (int, error) {
	n, err := r.ResponseRecorder.Write(p)
	if r.onWrite != nil {
		r.onWrite()
	}
	return n, err
}

func (r *liveRecorder) Flush() {
	r.ResponseRecorder.Flush()
	r.once.Do(func() { close(r.flushed) })
}

// testClick is a click on the publish button of msg by ou_op.
func testClick(msg string) Click {
	return Click{
		OpenID: "ou_op", UserID: "u_op", UnionID: "on_op", MessageID: msg, ChatID: "oc_1", TenantKey: "tk",
		Token: "c-tok", Tag: "button", Value: publishValue("b1"), EventID: randomID(8),
	}
}

// request builds what the platform sends for c in generation g.
func (e *testEnv) request(g Generation, c Click) platformRequest {
	var plain []byte
	if g == Legacy {
		plain = legacyBody(c)
	} else {
		plain = newBody(c, e.cfg.verificationToken, "cli_test", time.Now())
	}
	return e.signer.seal(g, plain, sealEncrypted, "1700000000", randomID(8))
}

func (e *testEnv) click(g Generation, c Click) *httptest.ResponseRecorder {
	e.t.Helper()
	req := e.request(g, c)
	return e.do("POST", e.cfg.path, req.Body, req.Header)
}

func (e *testEnv) putCard(id string, card []byte, query string) {
	e.t.Helper()
	if rec := e.do("PUT", "/cards/"+id+query, card, nil); rec.Code != http.StatusNoContent {
		e.t.Fatalf("PUT /cards/%s: got %d %s, want 204", id, rec.Code, rec.Body)
	}
}

func (e *testEnv) getCard(id string) []byte {
	e.t.Helper()
	rec := e.do("GET", "/cards/"+id, nil, nil)
	if rec.Code != http.StatusOK {
		e.t.Fatalf("GET /cards/%s: got %d %s, want 200", id, rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

func wantStatus(t testing.TB, rec *httptest.ResponseRecorder, want int) {
	t.Helper()
	if rec.Code != want {
		t.Fatalf("got status %d (%s), want %d", rec.Code, rec.Body, want)
	}
	if ct := rec.Header().Get("Content-Type"); rec.Body.Len() > 0 && !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want JSON", ct)
	}
}

// wantAnswer checks a click's answer: the card data and the toast.
func wantAnswer(t testing.TB, g Generation, rec *httptest.ResponseRecorder, card []byte, t0 *toast) {
	t.Helper()
	wantStatus(t, rec, http.StatusOK)
	sameJSON(t, rec.Body.Bytes(), answer(g, t0, card).bytes())
}

var generations = []Generation{Legacy, New}

func TestClickRoundTrip(t *testing.T) {
	card := readFixture(t, "card_v1_i18n.json")
	want, _ := doneCard(card)
	for _, g := range generations {
		for _, encrypted := range []bool{false, true} {
			name := g.String()
			opts := []func(*config){}
			if encrypted {
				name += "/encrypted"
				opts = append(opts, withKey)
			}
			t.Run(name, func(t *testing.T) {
				var l countingLogic
				e := newEnv(t, l.logic, opts...)
				e.putCard("om_1", card, "")
				before := time.Now().Truncate(time.Second)
				rec := e.click(g, testClick("om_1"))
				wantAnswer(t, g, rec, want, &toastDone)
				if d, err := http.ParseTime(rec.Header().Get("Date")); err != nil || d.Before(before) || d.After(time.Now()) {
					t.Errorf("Date %q (%v), want the time of the answer", rec.Header().Get("Date"), err)
				}
				sameJSON(t, e.getCard("om_1"), want)
				if n := l.n.Load(); n != 1 {
					t.Errorf("logic ran %d times, want 1", n)
				}
				if !strings.Contains(e.logText(), "outcome=success") || !strings.Contains(e.logText(), "message_id=om_1") {
					t.Errorf("no callback log line with message id and outcome:\n%s", e.logText())
				}
			})
		}
	}
}

func TestDateHeader(t *testing.T) {
	var c dateCache
	t0 := time.Date(2026, 12, 2, 9, 30, 15, 100, time.FixedZone("CST", 8*3600))
	first := c.header(t0)
	if want := "Wed, 02 Dec 2026 01:30:15 GMT"; len(first) != 1 || first[0] != want {
		t.Fatalf("Date %q, want [%q]", first, want)
	}
	if same := c.header(t0.Add(999 * time.Millisecond)); &same[0] != &first[0] {
		t.Error("a time in the same second was formatted again")
	}
	if next := c.header(t0.Add(time.Second)); next[0] != "Wed, 02 Dec 2026 01:30:16 GMT" {
		t.Errorf("the next second's Date is %q", next)
	}
	if back := c.header(t0); back[0] != first[0] {
		t.Errorf("after the clock stepped back, Date is %q, want %q", back, first)
	}
}

func TestPlainLegacyClickWithEncryptKey(t *testing.T) {
	// The documented platform: with an Encrypt Key, legacy clicks still
	// come in clear, signed with the verification token.
	var l countingLogic
	e := newEnv(t, l.logic, withKey)
	c := testClick("om_1")
	r := e.signer.seal(Legacy, legacyBody(c), sealClick, "1700000000", "n")
	if isObject(r.Body) && bytes.Contains(r.Body, []byte(`"encrypt"`)) {
		t.Fatal("the legacy click was encrypted")
	}
	wantAnswer(t, Legacy, e.do("POST", "/webhook/card", r.Body, r.Header), renderDone(nil), nil)
	if l.n.Load() != 1 {
		t.Errorf("the logic ran %d times, want once", l.n.Load())
	}
}

func TestFailureReasonLogged(t *testing.T) {
	e := newEnv(t, func(context.Context, Click) error { return errors.New("deploy API said 503") })
	e.click(Legacy, testClick("om_1"))
	if !strings.Contains(e.logText(), `reason="deploy API said 503"`) {
		t.Errorf("the callback line lacks the reason:\n%s", e.logText())
	}
}

func TestClickV2Card(t *testing.T) {
	e := newEnv(t, logOnly(slog.New(slog.DiscardHandler)))
	card := readFixture(t, "card_v2.json")
	e.putCard("om_2", card, "")
	want, _ := doneCard(card)
	wantAnswer(t, New, e.click(New, testClick("om_2")), want, &toastDone)
	sameJSON(t, e.getCard("om_2"), want)
}

func TestClickWithoutStoredCard(t *testing.T) {
	for _, g := range generations {
		t.Run(g.String(), func(t *testing.T) {
			var l countingLogic
			e := newEnv(t, l.logic)
			wantAnswer(t, g, e.click(g, testClick("om_none")), []byte(`{"elements":`+zhDone+`}`), &toastDone)
			if l.n.Load() != 1 {
				t.Errorf("logic ran %d times, want 1", l.n.Load())
			}
		})
	}
}

func TestChallenge(t *testing.T) {
	v := loadVectors(t).DecryptChallenge
	for _, tc := range []struct {
		name      string
		opts      []func(*config)
		body      []byte
		status    int
		challenge string // answered on 200
	}{
		{"plain", nil, challengeBody("ch-1", testToken), 200, "ch-1"},
		{"wrong token", nil, challengeBody("ch-1", "nope"), 401, ""},
		{"no token", nil, []byte(`{"challenge":"ch-1","type":"url_verification"}`), 401, ""},
		{"development mode takes any token", []func(*config){devMode}, challengeBody("ch-1", "nope"), 200, "ch-1"},
		{"encrypted vector", []func(*config){func(c *config) {
			c.encryptKey, c.verificationToken = v.EncryptKey, "iRdCP2WwXNBXRM3mGLqhrgch3cn0gbT6"
		}}, []byte(`{"encrypt":"` + v.Encrypt + `"}`), 200, "5634b122-c042-4634-bc7f-b07a3c3e77ad"},
		{"encrypted without key", nil, []byte(`{"encrypt":"` + v.Encrypt + `"}`), 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil, tc.opts...)
			rec := e.do("POST", "/webhook/card", tc.body, nil)
			wantStatus(t, rec, tc.status)
			if tc.status != 200 {
				return
			}
			var got struct{ Challenge string }
			json.Unmarshal(rec.Body.Bytes(), &got)
			if got.Challenge != tc.challenge {
				t.Errorf("got challenge %q, want %q", got.Challenge, tc.challenge)
			}
		})
	}
}

func TestLegacySignatureVector(t *testing.T) {
	v := loadVectors(t).LegacySignature
	e := newEnv(t, nil, func(c *config) { c.verificationToken = v.VerificationToken })
	h := http.Header{
		"X-Lark-Request-Timestamp": {v.Timestamp},
		"X-Lark-Request-Nonce":     {v.Nonce},
		"X-Lark-Signature":         {v.Signature},
	}
	// The vector's button is not ours: verified, then answered with {}.
	rec := e.do("POST", "/webhook/card", []byte(v.Body), h)
	wantStatus(t, rec, 200)
	sameJSON(t, rec.Body.Bytes(), []byte(`{}`))

	tampered := strings.Replace(v.Body, "Jhh", "Jhi", 1)
	wantStatus(t, e.do("POST", "/webhook/card", []byte(tampered), h), 401)
}

func TestNewSignatureVector(t *testing.T) {
	v := loadVectors(t).NewSignature
	e := newEnv(t, nil, func(c *config) { c.encryptKey = v.EncryptKey })
	h := http.Header{
		"X-Lark-Request-Timestamp": {v.Timestamp},
		"X-Lark-Request-Nonce":     {v.Nonce},
		"X-Lark-Signature":         {v.Signature},
	}
	// Verified, then found to hold "hello world", which is no callback.
	rec := e.do("POST", "/webhook/card", []byte(v.Body), h)
	wantStatus(t, rec, 400)
	if !strings.Contains(rec.Body.String(), "not a JSON object") {
		t.Errorf("got %s, want an error saying the plaintext is not a JSON object", rec.Body)
	}
	h.Set("X-Lark-Request-Nonce", "nonce-124")
	wantStatus(t, e.do("POST", "/webhook/card", []byte(v.Body), h), 401)
}

func TestVerificationFailures(t *testing.T) {
	card := readFixture(t, "card_v1_i18n.json")
	for _, tc := range []struct {
		name   string
		gen    Generation
		opts   []func(*config)
		mangle func(e *testEnv, r *platformRequest)
	}{
		{"legacy without signature", Legacy, nil, func(e *testEnv, r *platformRequest) { r.Header.Del("X-Lark-Signature") }},
		{"legacy with a wrong signature", Legacy, nil, func(e *testEnv, r *platformRequest) { r.Header.Set("X-Lark-Signature", strings.Repeat("0", 40)) }},
		{"legacy signed with another token", Legacy, nil, func(e *testEnv, r *platformRequest) {
			other := newSigner("other", "").legacySignature("1700000000", "n", r.Body)
			r.Header.Set("X-Lark-Request-Nonce", "n")
			r.Header.Set("X-Lark-Signature", hex.EncodeToString(other))
		}},
		{"legacy body changed after signing", Legacy, nil, func(e *testEnv, r *platformRequest) {
			r.Body = bytes.Replace(r.Body, []byte("ou_op"), []byte("ou_xx"), 1)
		}},
		{"new with a wrong header.token", New, nil, func(e *testEnv, r *platformRequest) {
			r.Body = bytes.Replace(r.Body, []byte(testToken), []byte("vtoken-wrong"), 1)
		}},
		{"new encrypted without signature", New, []func(*config){withKey}, func(e *testEnv, r *platformRequest) { r.Header.Del("X-Lark-Signature") }},
		{"new encrypted with a wrong signature", New, []func(*config){withKey}, func(e *testEnv, r *platformRequest) {
			r.Header.Set("X-Lark-Request-Timestamp", "1700000001")
		}},
		{"legacy encrypted, signature of the plaintext", Legacy, []func(*config){withKey}, func(e *testEnv, r *platformRequest) {
			plain := legacyBody(testClick("om_1"))
			r.Header.Set("X-Lark-Signature", hex.EncodeToString(e.signer.legacySignature("1700000000", r.Header.Get("X-Lark-Request-Nonce"), plain)))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l countingLogic
			e := newEnv(t, l.logic, tc.opts...)
			e.putCard("om_1", card, "")
			req := e.request(tc.gen, testClick("om_1"))
			tc.mangle(e, &req)
			rec := e.do("POST", "/webhook/card", req.Body, req.Header)
			wantStatus(t, rec, 401)
			if l.n.Load() != 0 {
				t.Error("the logic ran for an unverified click")
			}
			sameJSON(t, e.getCard("om_1"), card)
			if !strings.Contains(e.logText(), "rejected-verification") {
				t.Errorf("no log line for the rejected callback:\n%s", e.logText())
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, nil, withKey)
	sealed := func(plain string) []byte {
		return []byte(`{"encrypt":"` + e.signer.encrypt([]byte(plain), make([]byte, 16)) + `"}`)
	}
	signedPost := func(body []byte) *httptest.ResponseRecorder {
		h := http.Header{"X-Lark-Request-Timestamp": {"1"}, "X-Lark-Request-Nonce": {"n"},
			"X-Lark-Signature": {hex.EncodeToString(e.signer.newSignature("1", "n", body))}}
		return e.do("POST", "/webhook/card", body, h)
	}
	for _, tc := range []struct {
		name   string
		method string
		body   []byte
		status int
	}{
		{"empty", "POST", nil, 400},
		{"not JSON", "POST", []byte("hello"), 400},
		{"array", "POST", []byte("[1,2]"), 400},
		{"null", "POST", []byte("null"), 400},
		{"wrong shape", "POST", []byte(`{"schema":"2.0","event":{"operator":"ou_1"}}`), 400},
		{"bad base64", "POST", []byte(`{"encrypt":"***"}`), 400},
		{"short ciphertext", "POST", []byte(`{"encrypt":"AAAA"}`), 400},
		{"bad padding", "POST", []byte(`{"encrypt":"` + strings.Repeat("A", 64) + `"}`), 400},
		{"encrypted non-JSON", "POST", sealed("not json"), 400},
		{"encrypted wrong shape", "POST", sealed(`{"schema":"2.0","header":7}`), 400},
		{"envelope in envelope", "POST", sealed(`{"encrypt":"x"}`), 400},
		{"publish click without message id", "POST", sealed(`{"schema":"2.0","event":{"action":{"value":{"button_type":"public_publish"}}}}`), 400},
		{"too large", "POST", bytes.Repeat([]byte(" "), maxBody+1), 413},
		{"GET", "GET", nil, 405},
		{"PUT", "PUT", []byte("{}"), 405},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rec *httptest.ResponseRecorder
			if tc.method == "POST" && tc.status == 400 && bytes.Contains(tc.body, []byte("encrypt")) {
				rec = signedPost(tc.body) // signed, so what is tested is the decoding
			} else {
				rec = e.do(tc.method, "/webhook/card", tc.body, nil)
			}
			wantStatus(t, rec, tc.status)
			var got struct{ Error string }
			if json.Unmarshal(rec.Body.Bytes(), &got) != nil || got.Error == "" {
				t.Errorf("got %s, want a JSON error", rec.Body)
			}
		})
	}
}

func TestEncryptedWithoutKey(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.do("POST", "/webhook/card", []byte(`{"encrypt":"AAAA"}`), nil)
	wantStatus(t, rec, 400)
	if !strings.Contains(rec.Body.String(), "FEISHU_ENCRYPT_KEY") {
		t.Errorf("got %s, want a message naming FEISHU_ENCRYPT_KEY", rec.Body)
	}
}

func TestIgnoredClicks(t *testing.T) {
	card := readFixture(t, "card_v1_i18n.json")
	for _, tc := range []struct {
		name  string
		value string
	}{
		{"another button", `{"button_type":"rollback","button_id":"b1"}`},
		{"string value", `"public_publish"`},
		{"no value", ``},
		{"button_type not a string", `{"button_type":7}`},
	} {
		for _, g := range generations {
			t.Run(tc.name+"/"+g.String(), func(t *testing.T) {
				var l countingLogic
				e := newEnv(t, l.logic)
				e.putCard("om_1", card, "")
				c := testClick("om_1")
				c.Value = json.RawMessage(tc.value)
				rec := e.click(g, c)
				wantStatus(t, rec, 200)
				sameJSON(t, rec.Body.Bytes(), []byte(`{}`))
				if l.n.Load() != 0 {
					t.Error("the logic ran for a click that is not public_publish")
				}
				sameJSON(t, e.getCard("om_1"), card)
			})
		}
	}
}

func TestLogicFailure(t *testing.T) {
	card := readFixture(t, "card_v1_i18n.json")
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		name   string
		logic  Logic
		reason string
	}{
		{"error", func(context.Context, Click) error { return errors.New("deploy API said 503") }, "deploy API said 503"},
		{"panic", func(context.Context, Click) error { panic("boom") }, "logic panicked: boom"},
		{"long reason", func(context.Context, Click) error { return errors.New(long) }, long[:199] + "…"},
	} {
		for _, g := range generations {
			t.Run(tc.name+"/"+g.String(), func(t *testing.T) {
				e := newEnv(t, tc.logic)
				e.putCard("om_1", card, "")
				want := toastFailed(tc.reason)
				wantAnswer(t, g, e.click(g, testClick("om_1")), nil, &want)
				sameJSON(t, e.getCard("om_1"), card)
				rec, _ := e.store.Get("om_1")
				if st, _ := rec.Click(ClickKey{PublishButton, "b1"}); st.Status != StatusFailed || st.Reason != tc.reason {
					t.Errorf("state %+v, want failed with the reason", st)
				}
			})
		}
	}
}

func TestHealthz(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.do("GET", "/healthz", nil, nil)
	wantStatus(t, rec, 200)
	sameJSON(t, rec.Body.Bytes(), []byte(`{"status":"ok"}`))
}

func TestUnknownPath(t *testing.T) {
	e := newEnv(t, nil)
	wantStatus(t, e.do("GET", "/nope", nil, nil), 404)
}

func TestAdminAuth(t *testing.T) {
	card := []byte(`{"elements":[]}`)
	for _, tc := range []struct {
		name   string
		opts   []func(*config)
		auth   string
		status int
	}{
		{"right token", nil, "Bearer " + testAdmin, 204},
		{"wrong token", nil, "Bearer nope", 401},
		{"not bearer", nil, testAdmin, 401},
		{"missing", nil, "-", 401},
		{"no admin token in production", []func(*config){noAdmin}, "-", 403},
		{"no admin token in development on loopback", []func(*config){noAdmin, devMode}, "-", 204},
		{"no admin token in development off loopback", []func(*config){noAdmin, devMode, func(c *config) {
			c.addr, c.insecure = "0.0.0.0:8080", true
		}}, "-", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil, tc.opts...)
			rec := e.do("PUT", "/cards/om_1", card, http.Header{"Authorization": {tc.auth}})
			wantStatus(t, rec, tc.status)
			if tc.status == 403 && !strings.Contains(rec.Body.String(), "CARDCALLBACK_ADMIN_TOKEN") {
				t.Errorf("got %s, want a message naming CARDCALLBACK_ADMIN_TOKEN", rec.Body)
			}
			_, stored := e.store.Get("om_1")
			if stored != (tc.status == 204) {
				t.Errorf("card stored: %v, want %v", stored, tc.status == 204)
			}
		})
	}
}

func TestCardsAPI(t *testing.T) {
	e := newEnv(t, nil)
	wantStatus(t, e.do("GET", "/cards/om_1", nil, nil), 404)
	wantStatus(t, e.do("DELETE", "/cards/om_1", nil, nil), 404)
	for _, bad := range []string{``, `[]`, `"card"`, `{"a":`, `{} {}`} {
		wantStatus(t, e.do("PUT", "/cards/om_1", []byte(bad), nil), 400)
	}
	wantStatus(t, e.do("PUT", "/cards/om_1", bytes.Repeat([]byte(" "), maxBody+1), nil), 413)
	wantStatus(t, e.do("POST", "/cards/om_1", nil, nil), 405)

	e.putCard("om_1", []byte("{\n  \"elements\": []\n}"), "?allow=ou_a,%20ou_b,")
	sameJSON(t, e.getCard("om_1"), []byte(`{"elements":[]}`))
	rec := e.do("GET", "/cards/om_1/clicks", nil, nil)
	wantStatus(t, rec, 200)
	sameJSON(t, rec.Body.Bytes(), []byte(`{"message_id":"om_1","has_card":true,"allow":["ou_a","ou_b"],"clicks":[]}`))

	e.putCard("om_1", []byte(`{"elements":[{"tag":"hr"}]}`), "")
	sameJSON(t, e.getCard("om_1"), []byte(`{"elements":[{"tag":"hr"}]}`))
	wantStatus(t, e.do("DELETE", "/cards/om_1", nil, nil), 204)
	wantStatus(t, e.do("GET", "/cards/om_1", nil, nil), 404)
}

// logText is everything logged so far.
func (e *testEnv) logText() string {
	e.sink.Flush()
	return e.logs.String()
}

func TestChallengeAnswerEchoesAnyValue(t *testing.T) {
	for _, s := range awkwardStrings {
		var got struct{ Challenge *string }
		b := challengeAnswer(s).bytes()
		if err := json.Unmarshal(b, &got); err != nil || got.Challenge == nil {
			t.Fatalf("%q: %s is not {\"challenge\":…}: %v", s, b, err)
		}
		var want strings.Builder
		for _, r := range s { // each invalid byte becomes U+FFFD, as JSON has it
			want.WriteRune(r)
		}
		if *got.Challenge != want.String() {
			t.Errorf("echoed %q, want %q", *got.Challenge, want.String())
		}
	}
}

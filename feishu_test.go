package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeFeishu is the Open API as PROTOCOL.md describes it. It checks what
// it receives (bearer tokens, bodies, the rule that an update comes after
// the click was answered, the open_ids rule) and records every problem as
// a test error.
type fakeFeishu struct {
	t   testing.TB
	srv *httptest.Server

	mu          sync.Mutex
	tokenCalls  int
	tenantToken string
	expire      int
	answered    map[string]bool // update tokens whose click was answered
	uses        map[string]int  // update-token uses
	updates     []fakeUpdate
	updateFault []int // HTTP statuses or platform codes to answer first, in order
	invalidOnce bool  // answer the next call with an invalid-token code
	sent        []map[string]string
	sendCode    int
	updated     chan fakeUpdate
}

type fakeUpdate struct {
	Token   string          `json:"token"`
	Card    json.RawMessage `json:"card"`
	Bearer  string          `json:"-"`
	OpenIDs []string        `json:"-"`
}

const (
	fakeAppID     = "cli_fake"
	fakeAppSecret = "secret-fake-0123"
)

func newFakeFeishu(t testing.TB) *fakeFeishu {
	f := &fakeFeishu{t: t, expire: 7200, answered: map[string]bool{}, uses: map[string]int{}, updated: make(chan fakeUpdate, 100)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /open-apis/auth/v3/tenant_access_token/internal", f.token)
	mux.HandleFunc("POST /open-apis/interactive/v1/card/update", f.update)
	mux.HandleFunc("POST /open-apis/im/v1/messages", f.send)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeFeishu) client() *feishuClient {
	c := newFeishuClient(f.srv.URL, fakeAppID, fakeAppSecret)
	c.backoff = time.Millisecond
	return c
}

func (f *fakeFeishu) reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	json.NewEncoder(w).Encode(v)
}

func (f *fakeFeishu) checkJSON(r *http.Request) bool {
	if ct := r.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		f.t.Errorf("%s: Content-Type %q, want application/json; charset=utf-8", r.URL.Path, ct)
		return false
	}
	return true
}

func (f *fakeFeishu) token(w http.ResponseWriter, r *http.Request) {
	f.checkJSON(r)
	var body struct {
		AppID     string `json:"app_id"`
		AppSecret string `json:"app_secret"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	if body.AppID != fakeAppID || body.AppSecret != fakeAppSecret {
		f.reply(w, map[string]any{"code": 10014, "msg": "app secret invalid"})
		return
	}
	f.mu.Lock()
	f.tokenCalls++
	f.tenantToken = fmt.Sprintf("t-%d", f.tokenCalls)
	tok, exp := f.tenantToken, f.expire
	f.mu.Unlock()
	f.reply(w, map[string]any{"code": 0, "msg": "ok", "tenant_access_token": tok, "expire": exp})
}

// authorized checks the bearer token; false means it answered already.
func (f *fakeFeishu) authorized(w http.ResponseWriter, r *http.Request) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.invalidOnce {
		f.invalidOnce = false
		f.reply(w, map[string]any{"code": 99991663, "msg": "tenant access token invalid"})
		return false
	}
	if r.Header.Get("Authorization") != "Bearer "+f.tenantToken || f.tenantToken == "" {
		f.t.Errorf("%s: Authorization %q, want Bearer %s", r.URL.Path, r.Header.Get("Authorization"), f.tenantToken)
		f.reply(w, map[string]any{"code": 99991671, "msg": "invalid token"})
		return false
	}
	return true
}

// markAnswered is called when the answer to the click holding token was
// written to the platform.
func (f *fakeFeishu) markAnswered(token string) {
	f.mu.Lock()
	f.answered[token] = true
	f.mu.Unlock()
}

func (f *fakeFeishu) update(w http.ResponseWriter, r *http.Request) {
	f.checkJSON(r)
	if !f.authorized(w, r) {
		return
	}
	var u fakeUpdate
	if err := json.NewDecoder(r.Body).Decode(&u); err != nil || u.Token == "" || !isObject(u.Card) {
		f.t.Errorf("update: body is not {token, card}: %v", err)
		f.reply(w, map[string]any{"code": 11311, "msg": "bad card"})
		return
	}
	var ids struct {
		OpenIDs []string `json:"open_ids"`
	}
	json.Unmarshal(u.Card, &ids)
	u.OpenIDs, u.Bearer = ids.OpenIDs, r.Header.Get("Authorization")
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.answered[u.Token] {
		f.t.Errorf("update with token %s before its click was answered", u.Token)
	}
	if len(f.updateFault) > 0 {
		fault := f.updateFault[0]
		f.updateFault = f.updateFault[1:]
		if fault < 600 {
			w.WriteHeader(fault)
			w.Write([]byte("upstream trouble"))
		} else {
			f.reply(w, map[string]any{"code": fault, "msg": "fault"})
		}
		if fault >= 500 && fault < 600 {
			f.uses[u.Token]++
		}
		return
	}
	f.uses[u.Token]++
	if f.uses[u.Token] > maxTokenUses {
		f.reply(w, map[string]any{"code": 300040, "msg": "token used up"})
		return
	}
	exclusive := isExclusive(stripOpenIDs(u.Card))
	switch {
	case exclusive && len(u.OpenIDs) == 0:
		f.reply(w, map[string]any{"code": 300090, "msg": "open_ids required for an exclusive card"})
		return
	case !exclusive && len(u.OpenIDs) > 0:
		f.t.Errorf("update of a shared card sent open_ids %v", u.OpenIDs)
	}
	f.updates = append(f.updates, u)
	f.updated <- u
	f.reply(w, map[string]any{"code": 0, "msg": "ok"})
}

func stripOpenIDs(card []byte) []byte {
	var m map[string]json.RawMessage
	json.Unmarshal(card, &m)
	delete(m, "open_ids")
	b, _ := json.Marshal(m)
	return b
}

func (f *fakeFeishu) send(w http.ResponseWriter, r *http.Request) {
	f.checkJSON(r)
	if !f.authorized(w, r) {
		return
	}
	var body map[string]string
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		f.t.Errorf("send: body is not a string map: %v", err)
	}
	if body["msg_type"] != "interactive" || !isObject([]byte(body["content"])) || body["receive_id"] == "" {
		f.t.Errorf("send: got %v, want msg_type interactive, content a card JSON string, a receive_id", body)
	}
	body["receive_id_type"] = r.URL.Query().Get("receive_id_type")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sendCode != 0 {
		f.reply(w, map[string]any{"code": f.sendCode, "msg": "bot is not in the chat"})
		return
	}
	f.sent = append(f.sent, body)
	f.reply(w, map[string]any{"code": 0, "msg": "success", "data": map[string]string{"message_id": fmt.Sprintf("om_sent%d", len(f.sent))}})
}

func (f *fakeFeishu) waitUpdate(t testing.TB) fakeUpdate {
	t.Helper()
	select {
	case u := <-f.updated:
		return u
	case <-time.After(30 * time.Second):
		t.Fatal("no delayed update arrived")
	}
	return fakeUpdate{}
}

func TestTenantTokenCache(t *testing.T) {
	f := newFakeFeishu(t)
	c := f.client()
	now := time.Unix(1700000000, 0)
	c.now = func() time.Time { return now }
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tok, err := c.tenantToken(context.Background(), ""); err != nil || tok != "t-1" {
				t.Errorf("got %q, %v; want t-1", tok, err)
			}
		}()
	}
	wg.Wait()
	if f.tokenCalls != 1 {
		t.Errorf("20 concurrent callers made %d token calls, want 1", f.tokenCalls)
	}
	now = now.Add(7200*time.Second - tokenMargin - time.Second)
	if tok, _ := c.tenantToken(context.Background(), ""); tok != "t-1" {
		t.Errorf("before the margin: got %s, want the cached t-1", tok)
	}
	now = now.Add(2 * time.Second)
	if tok, _ := c.tenantToken(context.Background(), ""); tok != "t-2" {
		t.Errorf("within the margin: got %s, want a fresh t-2", tok)
	}
	if tok, _ := c.tenantToken(context.Background(), "t-2"); tok != "t-3" {
		t.Errorf("after a rejection: got %s, want a fresh t-3", tok)
	}
}

func TestTenantTokenBadSecret(t *testing.T) {
	f := newFakeFeishu(t)
	c := newFeishuClient(f.srv.URL, fakeAppID, "wrong")
	_, err := c.tenantToken(context.Background(), "")
	var ae *apiError
	if !errors.As(err, &ae) || ae.Code != 10014 {
		t.Errorf("got %v, want the platform's code 10014", err)
	}
}

func TestUpdateCardRetries(t *testing.T) {
	card := []byte(`{"config":{"update_multi":true},"elements":[]}`)
	for _, tc := range []struct {
		name     string
		faults   []int
		invalid  bool
		wantErr  string
		wantUses int
	}{
		{"ok", nil, false, "", 1},
		{"5xx then ok", []int{503}, false, "", 2},
		{"rate limited thrice then ok", []int{429, codeRateLimited, 429}, false, "", 1},
		{"5xx twice uses the token up", []int{502, 502}, false, "HTTP 502", 2},
		{"token expired is final", []int{300030}, false, "300030", 0},
		{"invalid tenant token is refreshed", nil, true, "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFeishu(t)
			f.updateFault, f.invalidOnce = tc.faults, tc.invalid
			f.markAnswered("c-1")
			c := f.client()
			err := c.updateCard(context.Background(), "c-1", card, nil)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("got %v, want error %q", err, tc.wantErr)
			}
			if f.uses["c-1"] != tc.wantUses {
				t.Errorf("token used %d times, want %d", f.uses["c-1"], tc.wantUses)
			}
		})
	}
}

func TestUpdateCardGivesUpAtTokenExpiry(t *testing.T) {
	f := newFakeFeishu(t)
	f.updateFault = []int{429, 429, 429}
	f.markAnswered("c-1")
	c := f.client()
	c.backoff = time.Hour
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errors.New("update token expired"))
	err := c.updateCard(ctx, "c-1", []byte(`{"config":{"update_multi":true}}`), nil)
	if err == nil || !strings.Contains(err.Error(), "update token expired") {
		t.Errorf("got %v, want to give up with the token's expiry", err)
	}
}

func TestWithOpenIDs(t *testing.T) {
	for card, want := range map[string]string{
		`{}`:            `{"open_ids":["ou_1"]}`,
		` { "a" : 1 } `: `{"open_ids":["ou_1"],"a":1}`,
	} {
		sameJSON(t, withOpenIDs([]byte(card), []string{"ou_1"}), []byte(want))
	}
	if got := withOpenIDs([]byte(`{"a":1}`), nil); string(got) != `{"a":1}` {
		t.Errorf("got %s, want the card unchanged", got)
	}
}

func TestOutboundCallsTimeOut(t *testing.T) {
	// A platform that never answers holds a call only for callTimeout.
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
	defer srv.Close()
	defer close(hang) // before Close, which waits for the handler
	c := newFeishuClient(srv.URL, fakeAppID, fakeAppSecret)
	c.callTimeout = 50 * time.Millisecond
	done := make(chan error, 1)
	go func() { _, err := c.tenantToken(context.Background(), ""); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want the call's deadline", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the call did not time out")
	}
}

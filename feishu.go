package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// feishuClient calls the platform's Open API (PROTOCOL §7–§9) as a
// self-built app: it keeps the tenant_access_token and sends and updates
// cards.
type feishuClient struct {
	base      string // https://open.feishu.cn or https://open.larksuite.com
	appID     string
	appSecret string
	hc        *http.Client
	now       func() time.Time
	// callTimeout bounds each outbound request; backoff is the first wait
	// between retries of a delayed update, doubled each time.
	callTimeout time.Duration
	backoff     time.Duration

	metrics    *metrics      // nil: counted nowhere
	refreshing chan struct{} // one token refresh at a time
	mu         sync.Mutex
	token      string
	expires    time.Time
}

func newFeishuClient(base, appID, appSecret string) *feishuClient {
	return &feishuClient{
		base: base, appID: appID, appSecret: appSecret,
		hc:          &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		now:         time.Now,
		callTimeout: 10 * time.Second,
		backoff:     500 * time.Millisecond,
		refreshing:  make(chan struct{}, 1),
	}
}

// apiError is an answer of the platform that is not success.
type apiError struct {
	HTTPStatus int
	Code       int
	Msg        string
}

func (e *apiError) Error() string {
	if e.Code == 0 {
		return fmt.Sprintf("feishu answered HTTP %d", e.HTTPStatus)
	}
	return fmt.Sprintf("feishu error %d: %s", e.Code, e.Msg)
}

// Platform codes (PROTOCOL §7, §8).
const (
	codeRateLimited = 99991400
)

// invalidTokenCode reports the codes that mean the tenant_access_token must
// be fetched again (PROTOCOL §8).
func invalidTokenCode(code int) bool {
	return code == 99991663 || code == 99991664 || code == 99991671
}

// tokenMargin is how long before its expiry a tenant token is replaced, as
// the official SDK does.
const tokenMargin = 3 * time.Minute

// tenantToken returns a valid tenant_access_token, fetching one when there
// is none, it is near its end, or it equals stale (rejected by the
// platform). Concurrent callers share one fetch.
func (c *feishuClient) tenantToken(ctx context.Context, stale string) (string, error) {
	if tok, ok := c.cachedToken(stale); ok {
		return tok, nil
	}
	select {
	case c.refreshing <- struct{}{}:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	defer func() { <-c.refreshing }()
	if tok, ok := c.cachedToken(stale); ok {
		return tok, nil // another caller refreshed it meanwhile
	}
	var out struct {
		Code   int    `json:"code"`
		Msg    string `json:"msg"`
		Token  string `json:"tenant_access_token"`
		Expire int    `json:"expire"`
	}
	body := map[string]string{"app_id": c.appID, "app_secret": c.appSecret}
	err := c.post(ctx, "/open-apis/auth/v3/tenant_access_token/internal", "", body, &out)
	if err == nil && (out.Code != 0 || out.Token == "") {
		err = &apiError{HTTPStatus: 200, Code: out.Code, Msg: out.Msg}
	}
	if c.metrics != nil {
		result := "ok"
		if err != nil {
			result = "failed"
		}
		c.metrics.tokens.inc(result)
	}
	if err != nil {
		return "", fmt.Errorf("tenant_access_token: %w", err)
	}
	c.mu.Lock()
	c.token, c.expires = out.Token, c.now().Add(time.Duration(out.Expire)*time.Second)
	c.mu.Unlock()
	return out.Token, nil
}

func (c *feishuClient) cachedToken(stale string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && c.token != stale && c.now().Before(c.expires.Add(-tokenMargin)) {
		return c.token, true
	}
	return "", false
}

// post sends body as JSON and decodes the JSON answer into out. Any answer
// that is not JSON is an *apiError with its HTTP status.
func (c *feishuClient) post(ctx context.Context, path, bearer string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.callTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json; charset=utf-8")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if json.Unmarshal(data, out) != nil {
		return &apiError{HTTPStatus: resp.StatusCode}
	}
	return nil
}

// apiResult is the envelope of every Open API answer.
type apiResult struct {
	Code int             `json:"code"`
	Msg  string          `json:"msg"`
	Data json.RawMessage `json:"data"`
}

// call posts to an Open API with the tenant token, fetching a new token and
// trying once more when the platform says the token is invalid.
func (c *feishuClient) call(ctx context.Context, path string, body any) (json.RawMessage, error) {
	stale := ""
	for attempt := 0; ; attempt++ {
		tok, err := c.tenantToken(ctx, stale)
		if err != nil {
			return nil, err
		}
		var res apiResult
		if err := c.post(ctx, path, tok, body, &res); err != nil {
			return nil, err
		}
		if res.Code == 0 {
			return res.Data, nil
		}
		if invalidTokenCode(res.Code) && attempt == 0 {
			stale = tok
			continue
		}
		return nil, &apiError{HTTPStatus: 200, Code: res.Code, Msg: res.Msg}
	}
}

// maxTokenUses is how often one update token may be used (PROTOCOL §7).
const maxTokenUses = 2

// updateCard replaces the card of a click through the delayed-update API.
// It must be called only after the click was answered. openIDs is set for
// an exclusive card. Transient failures (network, HTTP 5xx, rate limit) are
// retried with backoff while ctx allows (the caller bounds it by the token's
// 30 minutes) and while the token may still have a use left: a failure that
// may have reached the platform counts as a use.
func (c *feishuClient) updateCard(ctx context.Context, token string, card []byte, openIDs []string) error {
	body := struct {
		Token string          `json:"token"`
		Card  json.RawMessage `json:"card"`
	}{token, withOpenIDs(card, openIDs)}
	wait, uses := c.backoff, 0
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return fmt.Errorf("delayed update not sent: %w", context.Cause(ctx))
		}
		_, err := c.call(ctx, "/open-apis/interactive/v1/card/update", body)
		if err == nil {
			return nil
		}
		retry, used := transient(err)
		if used {
			uses++
		}
		if !retry || uses >= maxTokenUses || attempt >= 6 {
			return err
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return fmt.Errorf("%w (gave up: %w)", err, context.Cause(ctx))
		}
		wait *= 2
	}
}

// transient reports whether err is worth retrying, and whether the failed
// attempt may have used the update token up.
func transient(err error) (retry, used bool) {
	var ae *apiError
	if errors.As(err, &ae) {
		switch {
		case ae.HTTPStatus == http.StatusTooManyRequests || ae.Code == codeRateLimited:
			return true, false
		case ae.HTTPStatus >= 500:
			return true, true
		}
		return false, true
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true, true
	}
	return false, false
}

// withOpenIDs adds "open_ids" to a card object; an exclusive JSON 1.0 card
// needs it in a delayed update (PROTOCOL §7).
func withOpenIDs(card []byte, openIDs []string) json.RawMessage {
	if len(openIDs) == 0 {
		return card
	}
	ids, _ := json.Marshal(openIDs)
	rest := bytes.TrimSpace(card)[1:] // card is a JSON object
	out := make([]byte, 0, len(card)+len(ids)+16)
	out = append(out, `{"open_ids":`...)
	out = append(out, ids...)
	if r := bytes.TrimSpace(rest); len(r) > 0 && r[0] != '}' {
		out = append(out, ',')
	}
	return append(out, rest...)
}

// sendCard sends card as an interactive message (PROTOCOL §9) and returns
// its message id. It is not retried: a retry could send the card twice.
func (c *feishuClient) sendCard(ctx context.Context, receiveIDType, receiveID string, card []byte) (string, error) {
	body := map[string]string{"receive_id": receiveID, "msg_type": "interactive", "content": string(card)}
	data, err := c.call(ctx, "/open-apis/im/v1/messages?receive_id_type="+url.QueryEscape(receiveIDType), body)
	if err != nil {
		return "", err
	}
	var out struct {
		MessageID string `json:"message_id"`
	}
	if json.Unmarshal(data, &out) != nil || out.MessageID == "" {
		return "", errors.New("feishu answered without a message_id")
	}
	return out.MessageID, nil
}

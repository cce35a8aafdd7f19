package main

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMetricsEndpoints(t *testing.T) {
	e := newEnv(t, func(context.Context, Click) error { return nil })
	e.putCard("om_1", []byte(`{"elements":[]}`), "")
	e.click(Legacy, testClick("om_1"))
	e.click(New, testClick("om_1"))
	bad := e.request(Legacy, testClick("om_2"))
	bad.Header.Set("X-Lark-Signature", strings.Repeat("0", 40))
	e.do("POST", "/webhook/card", bad.Body, bad.Header)
	e.do("POST", "/webhook/card", []byte("nope"), nil)
	e.do("POST", "/webhook/card", challengeBody("c", testToken), nil)

	rec := e.do("GET", "/metrics", nil, nil)
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %d %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	body := rec.Body.String()
	for _, want := range []string{
		`cardcallback_callbacks_total{generation="legacy",outcome="success"} 1`,
		`cardcallback_callbacks_total{generation="new",outcome="repeat"} 1`,
		`cardcallback_callbacks_total{generation="unknown",outcome="rejected-verification"} 1`,
		`cardcallback_callbacks_total{generation="unknown",outcome="bad-request"} 1`,
		`cardcallback_callbacks_total{generation="none",outcome="challenge"} 1`,
		`cardcallback_callback_answer_seconds_bucket{le="2.5"} 5`,
		`cardcallback_callback_answer_seconds_bucket{le="3"} 5`,
		`cardcallback_callback_answer_seconds_count 5`,
		`cardcallback_logic_duration_seconds_count 1`,
		`cardcallback_stored_cards 1`,
		`# TYPE cardcallback_store_fsync_seconds histogram`,
		`# TYPE cardcallback_delayed_updates_total counter`,
	} {
		if !strings.Contains(body, want+"\n") && !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}

	rec = e.do("GET", "/debug/vars", nil, nil)
	var vars struct {
		Memstats     map[string]any `json:"memstats"`
		Cardcallback struct {
			Callbacks   map[string]int `json:"callbacks"`
			StoredCards int            `json:"stored_cards"`
		} `json:"cardcallback"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &vars); err != nil {
		t.Fatalf("/debug/vars is not JSON: %v", err)
	}
	if vars.Memstats == nil || vars.Cardcallback.Callbacks["legacy/success"] != 1 || vars.Cardcallback.StoredCards != 1 {
		t.Errorf("/debug/vars: got %+v", vars.Cardcallback)
	}

	for _, path := range []string{"/metrics", "/debug/vars"} {
		wantStatus(t, e.do("GET", path, nil, http.Header{"Authorization": {"Bearer wrong"}}), 401)
	}
	open := newEnv(t, nil, noAdmin)
	for _, path := range []string{"/metrics", "/debug/vars"} {
		if rec := open.do("GET", path, nil, http.Header{"Authorization": {"-"}}); rec.Code != 200 {
			t.Errorf("%s without an admin token configured: got %d, want it open", path, rec.Code)
		}
	}
}

func TestMetricsOfPushesTokensAndFsync(t *testing.T) {
	f := newFakeFeishu(t)
	g := newGate()
	st, _ := openTestStore(t, filepath.Join(t.TempDir(), "cards.db"), false)
	defer st.Close()
	e := newEnvWith(t, withConfig(fastBudget), st, g.logic, f.client())
	st.observeSync(e.metrics.fsync.observe)
	e.putCard("om_1", []byte(`{"config":{"update_multi":true}}`), "")
	e.platformClick(f, Legacy, testClick("om_1"))
	close(g.release)
	f.waitUpdate(t)
	e.runner.shutdown(context.Background())
	vars := e.metrics.vars().(map[string]any)
	if got := vars["delayed_updates"].(map[string]uint64)["ok"]; got != 1 {
		t.Errorf("delayed updates ok: got %d, want 1", got)
	}
	if got := vars["tenant_token_refreshes"].(map[string]uint64)["ok"]; got != 1 {
		t.Errorf("token refreshes ok: got %d, want 1", got)
	}
	if got := vars["store_fsync"].(map[string]any)["count"].(uint64); got < 2 {
		t.Errorf("fsyncs observed: got %d, want one per waiting write (the PUT, the outcome with its running state)", got)
	}
	if got := vars["callbacks"].(map[string]uint64)["legacy/in-progress"]; got != 1 {
		t.Errorf("in-progress callbacks: got %d, want 1", got)
	}
}

func TestHistogramBuckets(t *testing.T) {
	h := newHistogram([]float64{1, 2.5, 3})
	for _, d := range []time.Duration{500 * time.Millisecond, time.Second, 2600 * time.Millisecond, 4 * time.Second} {
		h.observe(d)
	}
	got := h.cumulative()
	want := []uint64{2, 2, 3, 4}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

func TestRequestTracing(t *testing.T) {
	f := newFakeFeishu(t)
	g := newGate()
	e := newEnvWith(t, withConfig(fastBudget), newMemStore(), g.logic, f.client())
	e.putCard("om_1", []byte(`{"config":{"update_multi":true}}`), "")

	for _, tc := range []struct {
		name   string
		header http.Header
		want   string
	}{
		{"X-Request-Id", http.Header{"X-Request-Id": {"req-123"}}, "req-123"},
		{"X-Tt-Logid", http.Header{"X-Tt-Logid": {"20261125abc"}}, "20261125abc"},
		{"unsafe id replaced", http.Header{"X-Request-Id": {"a b\nlevel=ERROR"}}, "cc-"},
		{"none", http.Header{}, "cc-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := e.do("GET", "/healthz", nil, tc.header)
			if got := rec.Header().Get("X-Request-Id"); !strings.HasPrefix(got, tc.want) {
				t.Errorf("X-Request-Id %q, want %q", got, tc.want)
			}
		})
	}

	// Every line a click causes carries its id, the background push's too.
	r := e.request(Legacy, testClick("om_1"))
	r.Header.Set("X-Request-Id", "click-7")
	req := r
	rec := e.do("POST", "/webhook/card", req.Body, req.Header)
	f.markAnswered("c-tok")
	if rec.Header().Get("X-Request-Id") != "click-7" {
		t.Errorf("answer header %q, want click-7", rec.Header().Get("X-Request-Id"))
	}
	close(g.release)
	f.waitUpdate(t)
	e.runner.shutdown(context.Background())
	lines := 0
	for _, line := range strings.Split(e.logText(), "\n") {
		if strings.Contains(line, "om_1") && (strings.Contains(line, "msg=callback") || strings.Contains(line, "final card pushed") || strings.Contains(line, "after the answer budget")) {
			lines++
			if !strings.Contains(line, "request_id=click-7") {
				t.Errorf("a line without the request id: %s", line)
			}
		}
	}
	if lines != 3 {
		t.Errorf("found %d lines of the click, want 3 (callback, logic finished, pushed):\n%s", lines, e.logText())
	}
}

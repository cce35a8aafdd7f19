package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
)

// TestReleaseWebhookExample runs examples/release-webhook.sh as -exec
// would, against a fake CI webhook.
func TestReleaseWebhookExample(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("the example needs curl")
	}
	var got map[string]any
	status := http.StatusCreated
	block := make(chan struct{})
	ci := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			<-block
			return
		}
		if r.Header.Get("Authorization") != "Bearer ci-token" {
			http.Error(w, "bad token", http.StatusUnauthorized)
			return
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("the webhook got no JSON: %v: %s", err, b)
		}
		w.WriteHeader(status)
		w.Write([]byte("pipeline queued\nline two"))
	}))
	defer ci.Close()
	defer close(block) // before Close, which waits for the blocked handler
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedURL := "http://" + closed.Addr().String()
	closed.Close()

	c := testClick("om_rel")
	c.ButtonID = `b"1`
	c.Value = json.RawMessage(`{"button_type":"public_publish","button_id":"b\"1"}`)
	for _, tc := range []struct {
		name    string
		env     []string
		status  int
		wantErr string
	}{
		{"started", []string{"RELEASE_WEBHOOK_URL=" + ci.URL + "/hook", "RELEASE_WEBHOOK_TOKEN=ci-token"}, 201, ""},
		{"refused", []string{"RELEASE_WEBHOOK_URL=" + ci.URL + "/hook", "RELEASE_WEBHOOK_TOKEN=ci-token"}, 500, "the CI system answered HTTP 500: pipeline queued line two"},
		{"wrong token", []string{"RELEASE_WEBHOOK_URL=" + ci.URL + "/hook", "RELEASE_WEBHOOK_TOKEN=nope"}, 201, "HTTP 401"},
		{"unreachable", []string{"RELEASE_WEBHOOK_URL=" + closedURL}, 201, "cannot reach the CI system"},
		{"timeout", []string{"RELEASE_WEBHOOK_URL=" + ci.URL + "/slow", "RELEASE_TIMEOUT=1"}, 201, "did not answer within 1s"},
		{"not configured", nil, 201, "RELEASE_WEBHOOK_URL is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, status = nil, tc.status
			err := execLogic("./examples/release-webhook.sh", append(testEnviron(), tc.env...))(context.Background(), c)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want success", err)
				}
				if got["message_id"] != "om_rel" || got["button_id"] != `b"1` || got["operator"].(map[string]any)["open_id"] != "ou_op" {
					t.Errorf("the webhook got %v", got)
				}
				if v, _ := got["value"].(map[string]any); v["button_type"] != "public_publish" {
					t.Errorf("action.value did not reach the webhook: %v", got["value"])
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want a reason with %q", err, tc.wantErr)
			}
		})
	}
}

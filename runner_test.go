package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// gateLogic blocks every run until release is closed, then returns err.
type gateLogic struct {
	countingLogic
	started chan struct{}
	release chan struct{}
	err     error
}

func newGate() *gateLogic {
	return &gateLogic{started: make(chan struct{}, 100), release: make(chan struct{})}
}

func (g *gateLogic) logic(ctx context.Context, c Click) error {
	g.n.Add(1)
	g.started <- struct{}{}
	select {
	case <-g.release:
		return g.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// platformClick sends a click as the platform does and tells the fake
// platform once its answer is written.
func (e *testEnv) platformClick(f *fakeFeishu, g Generation, c Click) *httptest.ResponseRecorder {
	e.t.Helper()
	pr := e.request(g, c)
	req := httptest.NewRequest("POST", e.cfg.path, bytes.NewReader(pr.Body))
	req.Header = pr.Header
	return e.serve(req, func() { f.markAnswered(c.Token) })
}

func fastBudget(c *config) { c.respondWithin = time.Millisecond }

func TestExactlyOnceConcurrentClicks(t *testing.T) {
	card := readFixture(t, "card_v1_i18n.json")
	done, _ := doneCard(card)
	g := newGate()
	e := newEnv(t, g.logic)
	e.putCard("om_1", card, "")

	const n = 50
	var wg sync.WaitGroup
	recs := make([]*httptest.ResponseRecorder, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			recs[i] = e.click(generations[i%2], testClick("om_1"))
		}()
	}
	<-g.started
	close(g.release)
	wg.Wait()

	if runs := g.n.Load(); runs != 1 {
		t.Errorf("the logic ran %d times for %d clicks, want once", runs, n)
	}
	for i, rec := range recs {
		wantStatus(t, rec, 200)
		var a struct {
			Card struct{ Data json.RawMessage }
		}
		data := rec.Body.Bytes()
		if generations[i%2] == New {
			json.Unmarshal(data, &a)
			data = a.Card.Data
		}
		sameJSON(t, data, done)
	}
	sameJSON(t, e.getCard("om_1"), done)
}

func TestDoneClickNeverRunsAgain(t *testing.T) {
	card := readFixture(t, "card_v1_i18n.json")
	done, _ := doneCard(card)
	var l countingLogic
	e := newEnv(t, l.logic)
	e.putCard("om_1", card, "")
	wantAnswer(t, Legacy, e.click(Legacy, testClick("om_1")), done, nil)
	wantAnswer(t, New, e.click(New, testClick("om_1")), done, &toastRepeat)
	wantAnswer(t, Legacy, e.click(Legacy, testClick("om_1")), done, nil)
	// Storing the card again keeps the click's state.
	e.putCard("om_1", card, "")
	wantAnswer(t, New, e.click(New, testClick("om_1")), card, &toastRepeat)
	if l.n.Load() != 1 {
		t.Errorf("the logic ran %d times, want once", l.n.Load())
	}
	// Another button of the same message is another key.
	c := testClick("om_1")
	c.Value = publishValue("b2")
	e.click(New, c)
	if l.n.Load() != 2 {
		t.Errorf("a second button: the logic ran %d times in all, want 2", l.n.Load())
	}
}

func TestRetryAfterFailure(t *testing.T) {
	card := readFixture(t, "card_v1_i18n.json")
	done, _ := doneCard(card)
	fail := true
	var mu sync.Mutex
	runs := 0
	e := newEnv(t, func(context.Context, Click) error {
		mu.Lock()
		defer mu.Unlock()
		runs++
		if fail {
			fail = false
			return errors.New("canary still draining")
		}
		return nil
	})
	e.putCard("om_1", card, "")
	want := toastFailed("canary still draining")
	wantAnswer(t, New, e.click(New, testClick("om_1")), nil, &want)
	wantAnswer(t, New, e.click(New, testClick("om_1")), done, &toastDone)
	if runs != 2 {
		t.Errorf("the logic ran %d times, want twice (fail, then retry)", runs)
	}
}

func TestAllowLists(t *testing.T) {
	card := []byte(`{"elements":[{"tag":"hr"}]}`)
	for _, tc := range []struct {
		name    string
		global  []string
		perCard string
		allowed bool
	}{
		{"anyone", nil, "", true},
		{"global list by open_id", []string{"ou_x", "ou_op"}, "", true},
		{"global list by user_id", []string{"u_op"}, "", true},
		{"not on the global list", []string{"ou_x"}, "", false},
		{"card list overrides global", []string{"ou_op"}, "?allow=ou_designated", false},
		{"on the card list", []string{"ou_x"}, "?allow=ou_designated,ou_op", true},
	} {
		for _, g := range generations {
			t.Run(tc.name+"/"+g.String(), func(t *testing.T) {
				var l countingLogic
				e := newEnv(t, l.logic, withAllow(tc.global...))
				e.putCard("om_1", card, tc.perCard)
				rec := e.click(g, testClick("om_1"))
				if tc.allowed {
					done, _ := doneCard(card)
					wantAnswer(t, g, rec, done, &toastDone)
					return
				}
				wantAnswer(t, g, rec, nil, &toastNotAllowed)
				if l.n.Load() != 0 {
					t.Error("the logic ran for someone not allowed")
				}
				sameJSON(t, e.getCard("om_1"), card)
				if logs := e.logText(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "open_id=ou_op") || !strings.Contains(logs, "user_id=u_op") {
					t.Errorf("no warning with the operator's ids:\n%s", logs)
				}
			})
		}
	}
}

func TestAllowByUnionID(t *testing.T) {
	// Only the new generation carries a union_id.
	var l countingLogic
	e := newEnv(t, l.logic, withAllow("on_op"))
	e.click(New, testClick("om_1"))
	e.click(Legacy, testClick("om_2"))
	if l.n.Load() != 1 {
		t.Errorf("the logic ran %d times, want once (the new-generation click)", l.n.Load())
	}
}

func TestInProgressThenPush(t *testing.T) {
	shared := readFixture(t, "card_v1_i18n.json")
	exclusive := []byte(`{"header":{"title":{"tag":"plain_text","content":"t"}},"elements":[{"tag":"action","actions":[{"tag":"button"}]}]}`)
	for _, tc := range []struct {
		name    string
		card    []byte
		gen     Generation
		err     error
		openIDs bool
	}{
		{"shared card, success", shared, Legacy, nil, false},
		{"shared card, success, new generation", shared, New, nil, false},
		{"exclusive card gets open_ids", exclusive, Legacy, nil, true},
		{"failure keeps the buttons", shared, New, errors.New("rollout blocked"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeFeishu(t)
			g := newGate()
			g.err = tc.err
			e := newEnvWith(t, withConfig(fastBudget), newMemStore(), g.logic, f.client())
			e.putCard("om_1", tc.card, "")

			rec := e.platformClick(f, tc.gen, testClick("om_1"))
			prog, _ := progressCard(tc.card)
			tp := &toastProgress
			if tc.gen == Legacy {
				tp = nil
			}
			wantAnswer(t, tc.gen, rec, prog, tp)
			sameJSON(t, e.getCard("om_1"), prog)

			close(g.release)
			u := f.waitUpdate(t)
			want, _ := doneCard(tc.card)
			if tc.err != nil {
				want, _ = failedCard(tc.card, tc.err.Error())
				if !bytes.Contains(u.Card, []byte(`"tag":"action"`)) {
					t.Errorf("the failure card lost its buttons: %s", u.Card)
				}
			}
			sameJSON(t, stripOpenIDs(u.Card), want)
			if u.Token != "c-tok" {
				t.Errorf("pushed with token %q, want the click's c-tok", u.Token)
			}
			if got := len(u.OpenIDs) == 1 && u.OpenIDs[0] == "ou_op"; got != tc.openIDs {
				t.Errorf("open_ids %v, want them: %v", u.OpenIDs, tc.openIDs)
			}

			// Whatever happened to the push, a later click answers the final state.
			if tc.err == nil {
				wantAnswer(t, New, e.click(New, testClick("om_1")), want, &toastRepeat)
			} else {
				rec, _ := e.store.Get("om_1")
				if st, _ := rec.Click(ClickKey{PublishButton, "b1"}); st.Status != StatusFailed {
					t.Errorf("state %+v, want failed", st)
				}
			}
		})
	}
}

func withConfig(opts ...func(*config)) *config {
	c := baseConfig()
	for _, o := range opts {
		o(c)
	}
	return c
}

func TestInProgressWaitersEachGetThePush(t *testing.T) {
	// On an exclusive card each operator sees their own copy: each is
	// updated with their own token and open_id.
	f := newFakeFeishu(t)
	g := newGate()
	e := newEnvWith(t, withConfig(fastBudget), newMemStore(), g.logic, f.client())
	e.putCard("om_1", []byte(`{"elements":[]}`), "")
	a, b := testClick("om_1"), testClick("om_1")
	b.OpenID, b.UserID, b.UnionID, b.Token = "ou_other", "u_other", "on_other", "c-other"
	e.platformClick(f, Legacy, a)
	<-g.started
	e.platformClick(f, New, b)
	close(g.release)
	got := map[string]string{}
	for range 2 {
		u := f.waitUpdate(t)
		got[u.Token] = strings.Join(u.OpenIDs, ",")
	}
	if got["c-tok"] != "ou_op" || got["c-other"] != "ou_other" {
		t.Errorf("got updates %v, want one per operator with their token", got)
	}
	if g.n.Load() != 1 {
		t.Errorf("the logic ran %d times, want once", g.n.Load())
	}
}

func TestInProgressWithoutCredentials(t *testing.T) {
	g := newGate()
	e := newEnv(t, g.logic, fastBudget)
	e.putCard("om_1", []byte(`{"elements":[]}`), "")
	prog, _ := progressCard([]byte(`{"elements":[]}`))
	wantAnswer(t, Legacy, e.click(Legacy, testClick("om_1")), prog, nil)
	close(g.release)
	e.runner.shutdown(context.Background())
	if !strings.Contains(e.logText(), "FEISHU_APP_ID") {
		t.Errorf("no warning that the final card cannot be pushed:\n%s", e.logText())
	}
	done, _ := doneCard([]byte(`{"elements":[]}`))
	wantAnswer(t, New, e.click(New, testClick("om_1")), done, &toastRepeat)
}

func TestShutdownInterruptsRunningLogic(t *testing.T) {
	g := newGate()
	e := newEnv(t, g.logic, fastBudget)
	e.putCard("om_1", []byte(`{"elements":[]}`), "")
	e.click(New, testClick("om_1"))
	<-g.started
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the shutdown timeout has passed
	if err := e.runner.shutdown(ctx); err == nil {
		t.Error("got no error, want one saying logic was interrupted")
	}
	rec, _ := e.store.Get("om_1")
	st, _ := rec.Click(ClickKey{PublishButton, "b1"})
	if st.Status != StatusFailed || st.Reason != "interrupted by shutdown" {
		t.Errorf("state %+v, want failed: interrupted by shutdown", st)
	}
}

func TestLogicTimeout(t *testing.T) {
	g := newGate()
	e := newEnv(t, g.logic, func(c *config) { c.logicTimeout = time.Millisecond })
	want := toastFailed("timed out after 1ms")
	wantAnswer(t, Legacy, e.click(Legacy, testClick("om_1")), nil, &want)
}

func TestSendMessage(t *testing.T) {
	f := newFakeFeishu(t)
	e := newEnvWith(t, baseConfig(), newMemStore(), nil, f.client())
	card := readFixture(t, "card_v1_i18n.json")
	body, _ := json.Marshal(map[string]any{"receive_id_type": "open_id", "receive_id": "ou_rm", "card": json.RawMessage(card), "allow": []string{"ou_rm"}})
	rec := e.do("POST", "/messages", body, nil)
	wantStatus(t, rec, 200)
	sameJSON(t, rec.Body.Bytes(), []byte(`{"message_id":"om_sent1"}`))
	if len(f.sent) != 1 || f.sent[0]["receive_id"] != "ou_rm" || f.sent[0]["receive_id_type"] != "open_id" {
		t.Fatalf("sent %v", f.sent)
	}
	sameJSON(t, []byte(f.sent[0]["content"]), card)
	sameJSON(t, e.getCard("om_sent1"), card)
	if r, _ := e.store.Get("om_sent1"); len(r.Allow) != 1 || r.Allow[0] != "ou_rm" {
		t.Errorf("allow list %v, want [ou_rm]", r.Allow)
	}

	f.sendCode = 230002
	rec = e.do("POST", "/messages", body, nil)
	wantStatus(t, rec, 502)
	var out struct {
		Code int
		Msg  string
	}
	json.Unmarshal(rec.Body.Bytes(), &out)
	if out.Code != 230002 || out.Msg == "" {
		t.Errorf("got %s, want the platform's code and msg", rec.Body)
	}

	for _, bad := range []string{`{}`, `{"receive_id":"x","card":[]}`, `{"receive_id":"x","receive_id_type":"phone","card":{}}`, `nope`} {
		wantStatus(t, e.do("POST", "/messages", []byte(bad), nil), 400)
	}
	wantStatus(t, e.do("POST", "/messages", body, http.Header{"Authorization": {"Bearer nope"}}), 401)
}

func TestSendMessageWithoutCredentials(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.do("POST", "/messages", []byte(`{"receive_id":"ou_1","card":{}}`), nil)
	wantStatus(t, rec, 503)
	if !strings.Contains(rec.Body.String(), "FEISHU_APP_ID") {
		t.Errorf("got %s, want a message naming FEISHU_APP_ID", rec.Body)
	}
}

// TestSlowExecInProgressThenPush runs a real -exec script that outlasts the
// budget: the click is answered in progress, and the final card is pushed
// once the script ends.
func TestSlowExecInProgressThenPush(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "go")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFakeFeishu(t)
	// The script blocks until the test writes to the FIFO.
	logic := execLogic(`read line < "`+fifo+`"; echo "released $line" >&2`, testEnviron())
	e := newEnvWith(t, withConfig(fastBudget), newMemStore(), logic, f.client())
	card := readFixture(t, "card_v1_i18n.json")
	e.putCard("om_1", card, "")

	prog, _ := progressCard(card)
	wantAnswer(t, New, e.platformClick(f, New, testClick("om_1")), prog, &toastProgress)

	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("now\n"))
	w.Close()
	u := f.waitUpdate(t)
	done, _ := doneCard(card)
	sameJSON(t, u.Card, done)
	wantAnswer(t, Legacy, e.click(Legacy, testClick("om_1")), done, nil)
}

// TestInProgressAnswerClosesItsConnection: a first click's logic runs on
// its handler's goroutine, so the connection that carried it stays busy
// until the logic ends. Its in-progress answer must close it, or the
// platform's next request on it would wait for the release.
func TestInProgressAnswerClosesItsConnection(t *testing.T) {
	t.Run("net/http", func(t *testing.T) {
		testInProgressAnswerClosesItsConnection(t, func(t *testing.T, h http.Handler) string {
			srv := httptest.NewServer(h)
			t.Cleanup(srv.Close)
			return srv.URL
		})
	})
	t.Run("fast path", func(t *testing.T) {
		testInProgressAnswerClosesItsConnection(t, func(t *testing.T, h http.Handler) string {
			s := startFast(t, baseConfig().path, h, nil, nil)
			t.Cleanup(func() {
				if got := s.handedOff(); len(got) > 0 {
					t.Errorf("handed connections to net/http: %v", got)
				}
			})
			return "http://" + s.addr
		})
	})
}

func testInProgressAnswerClosesItsConnection(t *testing.T, serve func(*testing.T, http.Handler) string) {
	g := newGate()
	e := newEnv(t, g.logic, fastBudget)
	card := []byte(`{"elements":[]}`)
	e.putCard("om_1", card, "")
	prog, _ := progressCard(card)
	url := serve(t, e.handler)
	defer close(g.release)                   // before the server's end, which waits for the handler
	hc := &http.Client{Timeout: time.Minute} // a safety net: a reused connection would block
	post := func() (*http.Response, []byte) {
		t.Helper()
		r := e.request(Legacy, testClick("om_1"))
		req, _ := http.NewRequest("POST", url+e.cfg.path, bytes.NewReader(r.Body))
		req.Header = r.Header
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("the click was not answered: %v", err)
		}
		defer resp.Body.Close()
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		return resp, body.Bytes()
	}

	resp, body := post()
	if resp.StatusCode != 200 || !resp.Close {
		t.Errorf("got %d, Connection %q; want 200 and the connection closed", resp.StatusCode, resp.Header.Get("Connection"))
	}
	sameJSON(t, body, prog)
	<-g.started
	// The same client clicks again while the logic runs: it waits the
	// budget on a fresh connection and is answered in progress too.
	resp, body = post()
	if resp.StatusCode != 200 {
		t.Errorf("second click: got %d, want 200", resp.StatusCode)
	}
	sameJSON(t, body, prog)
	if n := g.n.Load(); n != 1 {
		t.Errorf("the logic ran %d times, want once", n)
	}
}

// TestClickWhoseConnectionBrokeIsPushed: the logic of a first click goes
// on when the platform stops waiting for its answer; the outcome reaches
// the card through the delayed update. Through net/http, the request's
// context ends; on the fast path, the client closes the connection.
func TestClickWhoseConnectionBrokeIsPushed(t *testing.T) {
	setup := func(t *testing.T) (*fakeFeishu, *gateLogic, *testEnv, []byte) {
		f := newFakeFeishu(t)
		g := newGate()
		e := newEnvWith(t, baseConfig(), newMemStore(), g.logic, f.client())
		card := readFixture(t, "card_v1_i18n.json")
		e.putCard("om_1", card, "")
		return f, g, e, card
	}
	wantPushed := func(t *testing.T, f *fakeFeishu, card []byte) {
		done, _ := doneCard(card)
		u := f.waitUpdate(t)
		sameJSON(t, u.Card, done)
		if u.Token != "c-tok" {
			t.Errorf("pushed with token %q, want the click's c-tok", u.Token)
		}
	}
	t.Run("net/http", func(t *testing.T) {
		f, g, e, card := setup(t)
		pr := e.request(Legacy, testClick("om_1"))
		ctx, cancel := context.WithCancel(context.Background())
		req := httptest.NewRequestWithContext(ctx, "POST", e.cfg.path, bytes.NewReader(pr.Body))
		req.Header = pr.Header
		answered := make(chan *httptest.ResponseRecorder)
		go func() { answered <- e.serve(req, func() { f.markAnswered("c-tok") }) }()
		<-g.started
		cancel()
		close(g.release)
		done, _ := doneCard(card)
		wantAnswer(t, Legacy, <-answered, done, nil)
		wantPushed(t, f, card)
	})
	t.Run("fast path", func(t *testing.T) {
		f, g, e, card := setup(t)
		answered := make(chan struct{})
		s := startFast(t, e.cfg.path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			e.handler.ServeHTTP(&onWrite{ResponseWriter: w, f: func() { f.markAnswered("c-tok") }}, r)
			close(answered)
		}), nil, nil)
		pr := e.request(Legacy, testClick("om_1"))
		req, _ := http.NewRequest("POST", "http://"+s.addr+e.cfg.path, bytes.NewReader(pr.Body))
		req.Header = pr.Header
		conn, _ := s.dial(t)
		req.Write(conn)
		<-g.started
		conn.Close()
		close(g.release)
		<-answered
		wantPushed(t, f, card)
		if got := s.handedOff(); len(got) > 0 {
			t.Errorf("handed off to net/http: %v", got)
		}
	})
}

// onWrite calls f before the first write of an answer.
type onWrite struct {
	http.ResponseWriter
	f    func()
	once sync.Once
}

func (w *onWrite) Write(b []byte) (int, error) {
	w.once.Do(w.f)
	return w.ResponseWriter.Write(b)
}

func (w *onWrite) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

func TestSlowLogicDoesNotHoldUpOtherButtons(t *testing.T) {
	// Each first click runs its logic on its own handler's goroutine; one
	// busy with a slow release must not keep another message's click
	// waiting.
	slow := newGate()
	var fast countingLogic
	e := newEnv(t, func(ctx context.Context, c Click) error {
		if c.MessageID == "om_slow" {
			return slow.logic(ctx, c)
		}
		return fast.logic(ctx, c)
	})
	card := []byte(`{"elements":[]}`)
	done, _ := doneCard(card)
	for _, id := range []string{"om_slow", "om_1", "om_2"} {
		e.putCard(id, card, "")
	}
	answered := make(chan *httptest.ResponseRecorder)
	go func() { answered <- e.click(Legacy, testClick("om_slow")) }()
	<-slow.started
	for _, id := range []string{"om_1", "om_2"} {
		wantAnswer(t, Legacy, e.click(Legacy, testClick(id)), done, nil)
	}
	close(slow.release)
	wantAnswer(t, Legacy, <-answered, done, nil)
	if fast.n.Load() != 2 || slow.n.Load() != 1 {
		t.Errorf("runs: %d fast, %d slow; want 2 and 1", fast.n.Load(), slow.n.Load())
	}
}

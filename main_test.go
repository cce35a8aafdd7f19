package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startRun starts the program through run, as a user would, and returns
// its base URL once it listens. Cancelling ctx stops it; wait returns run's
// error.
func startRun(t *testing.T, ctx context.Context, args []string, env map[string]string) (base string, logs *syncBuffer, wait func() error) {
	t.Helper()
	pr, pw := io.Pipe()
	logs = &syncBuffer{}
	errc := make(chan error, 1)
	go func() {
		err := run(ctx, append([]string{"cardcallback", "-log-format", "json", "-addr", "127.0.0.1:0"}, args...),
			func(k string) string { return env[k] }, strings.NewReader(""), io.Discard, pw)
		pw.CloseWithError(fmt.Errorf("run returned: %v", err))
		errc <- err
	}()
	addr, read := watchLog(pr, logs)
	select {
	case a, ok := <-addr:
		if !ok {
			t.Fatalf("the server did not start: %v\n%s", <-errc, logs)
		}
		return "http://" + a, logs, func() error { err := <-errc; <-read; return err }
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not start in time")
	}
	return "", nil, nil
}

// watchLog copies a server's JSON log lines into logs. addr yields the
// address of its "listening" line, or closes if it ends without one; read
// closes once every line is in logs.
func watchLog(r io.Reader, logs *syncBuffer) (addr <-chan string, read <-chan struct{}) {
	a, done := make(chan string, 1), make(chan struct{})
	go func() {
		defer close(done)
		defer close(a)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			logs.Write(append(sc.Bytes(), '\n'))
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				a <- line.Addr
			}
		}
	}()
	return a, done
}

func TestRunEndToEnd(t *testing.T) {
	t.Run("fast path", func(t *testing.T) { testRunEndToEnd(t, nil, true) })
	t.Run("net/http", func(t *testing.T) { testRunEndToEnd(t, []string{"-fast-path=false"}, false) })
}

func testRunEndToEnd(t *testing.T, args []string, fast bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := map[string]string{"FEISHU_VERIFICATION_TOKEN": testToken, "CARDCALLBACK_ADMIN_TOKEN": testAdmin}
	base, logs, wait := startRun(t, ctx, args, env)

	card := readFixture(t, "card_v1_i18n.json")
	req, _ := http.NewRequest("PUT", base+"/cards/om_e2e", bytes.NewReader(card))
	req.Header.Set("Authorization", "Bearer "+testAdmin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("PUT: %v %v", resp, err)
	}
	resp.Body.Close()

	// A signed legacy click, its header names in lower case as a proxy
	// would send them, over a raw connection so nothing canonicalises them.
	s := newSigner(testToken, "")
	body := legacyBody(testClick("om_e2e"))
	sig := s.legacySignature("Monday, 14-Nov-22 15:53:37 CST", "nonce-1", body)
	u := strings.TrimPrefix(base, "http://")
	conn, err := net.Dial("tcp", u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /webhook/card HTTP/1.1\r\nhost: %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"+
		"x-lark-request-timestamp: Monday, 14-Nov-22 15:53:37 CST\r\nx-lark-request-nonce: nonce-1\r\nx-lark-signature: %x\r\nconnection: close\r\n\r\n%s",
		u, len(body), sig, body)
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	want, _ := doneCard(card)
	if resp.StatusCode != 200 {
		t.Fatalf("click: got %d %s", resp.StatusCode, got)
	}
	sameJSON(t, got, want)

	req, _ = http.NewRequest("GET", base+"/cards/om_e2e", nil)
	req.Header.Set("Authorization", "Bearer "+testAdmin)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	sameJSON(t, got, want)

	// The click stayed on the fast path; the admin API's requests were
	// handed to net/http.
	req, _ = http.NewRequest("GET", base+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+testAdmin)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	handoffs := regexp.MustCompile(`cardcallback_fast_path_handoffs_total\{reason="(\w+)"\} \d+`).FindAllStringSubmatch(string(metrics), -1)
	var reasons []string
	for _, h := range handoffs {
		reasons = append(reasons, h[1])
	}
	if want := map[bool]string{true: "[route]", false: "[]"}[fast]; fmt.Sprint(reasons) != want {
		t.Errorf("connections handed off for %v, want %s:\n%s", reasons, want, metrics)
	}

	cancel()
	if err := wait(); err != nil {
		t.Errorf("run: %v", err)
	}
	for _, secret := range []string{testToken, testAdmin, "c-tok"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("a secret reached the logs:\n%s", logs)
		}
	}
	if !strings.Contains(logs.String(), `"outcome":"success"`) {
		t.Errorf("no callback log line:\n%s", logs)
	}
	if !strings.Contains(logs.String(), `"level":"WARN","msg":"no app credentials`) {
		t.Errorf("no warning at start that, without app credentials, a slow release cannot update its card:\n%s", logs)
	}
}

func TestRunRefusesDevelopmentModeOffLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:8080"} {
		err := run(context.Background(), []string{"cardcallback", "-addr", addr}, func(string) string { return "" },
			strings.NewReader(""), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "FEISHU_VERIFICATION_TOKEN") || !strings.Contains(err.Error(), "-insecure") {
			t.Errorf("-addr %s: got %v, want a refusal naming FEISHU_VERIFICATION_TOKEN and -insecure", addr, err)
		}
	}
}

func TestRunInsecureDevelopmentMode(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- run(ctx, []string{"cardcallback", "-addr", "0.0.0.0:0", "-insecure"}, func(string) string { return "" },
			strings.NewReader(""), io.Discard, pw)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	sawWarning := false
	for sc.Scan() {
		if strings.Contains(sc.Text(), "DEVELOPMENT MODE") {
			sawWarning = true
		}
		if strings.Contains(sc.Text(), "msg=listening") {
			cancel()
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("run: %v", err)
	}
	if !sawWarning {
		t.Error("no loud warning about development mode")
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(*config) bool
		wantErr string
	}{
		{"defaults", nil, nil, func(c *config) bool {
			return c.addr == "127.0.0.1:8080" && c.path == "/webhook/card" && c.respondWithin == 2500*time.Millisecond &&
				c.logicTimeout == 10*time.Minute && c.shutdownTimeout == 30*time.Second && c.feishuURL == "https://open.feishu.cn" &&
				c.fastPath
		}, ""},
		{"fast path off", nil, map[string]string{"CARDCALLBACK_FAST_PATH": "false"}, func(c *config) bool { return !c.fastPath }, ""},
		{"fast path flag over its variable", []string{"-fast-path=true"}, map[string]string{"CARDCALLBACK_FAST_PATH": "0"},
			func(c *config) bool { return c.fastPath }, ""},
		{"bad boolean in the environment", nil, map[string]string{"CARDCALLBACK_FAST_PATH": "sometimes"}, nil, `CARDCALLBACK_FAST_PATH: want true or false, got "sometimes"`},
		{"environment", nil, map[string]string{"CARDCALLBACK_ADDR": "127.0.0.1:9", "CARDCALLBACK_PATH": "/cb",
			"CARDCALLBACK_ALLOW": "ou_a, ou_b", "CARDCALLBACK_RESPOND_WITHIN": "2s", "FEISHU_BASE_URL": "https://open.larksuite.com/"},
			func(c *config) bool {
				return c.addr == "127.0.0.1:9" && c.path == "/cb" && len(c.allow) == 2 && c.allow[1] == "ou_b" &&
					c.respondWithin == 2*time.Second && c.feishuURL == "https://open.larksuite.com"
			}, ""},
		{"a flag wins over its variable", []string{"-addr", "127.0.0.1:7", "-verification-token", "flag"},
			map[string]string{"CARDCALLBACK_ADDR": "127.0.0.1:9", "FEISHU_VERIFICATION_TOKEN": "env"},
			func(c *config) bool { return c.addr == "127.0.0.1:7" && c.verificationToken == "flag" }, ""},
		{"bad duration in the environment", nil, map[string]string{"CARDCALLBACK_LOGIC_TIMEOUT": "soon"}, nil, "CARDCALLBACK_LOGIC_TIMEOUT"},
		{"bad path", []string{"-path", "webhook"}, nil, nil, "-path"},
		{"path taken by an endpoint", []string{"-path", "/cards/x"}, nil, nil, "taken"},
		{"bad log format", []string{"-log-format", "xml"}, nil, nil, "-log-format"},
		{"negative budget", []string{"-respond-within", "-1s"}, nil, nil, "-respond-within"},
		{"half the app credentials", []string{"-app-id", "cli_1"}, nil, nil, "FEISHU_APP_SECRET"},
		{"bad base URL", []string{"-feishu-url", "open.feishu.cn"}, nil, nil, "-feishu-url"},
		{"stray argument", []string{"serve"}, nil, nil, "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig(tc.args, func(k string) string { return tc.env[k] }, io.Discard)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want an error about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("got %+v", c)
			}
		})
	}
}

func TestSimulateAndLoadtest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := map[string]string{"FEISHU_VERIFICATION_TOKEN": testToken, "FEISHU_ENCRYPT_KEY": testKey, "CARDCALLBACK_ADMIN_TOKEN": testAdmin}
	base, _, wait := startRun(t, ctx, nil, env)
	addr := strings.TrimPrefix(base, "http://")
	client := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(ctx, append([]string{"cardcallback"}, append(args[:1:1], append([]string{"-addr", addr}, args[1:]...)...)...),
			func(k string) string { return env[k] }, strings.NewReader(""), &out, io.Discard)
		return out.String(), err
	}

	out, err := client("simulate", "-challenge")
	if err != nil || !strings.Contains(out, "HTTP 200") || !strings.Contains(out, `"challenge"`) {
		t.Errorf("simulate -challenge: %v\n%s", err, out)
	}
	out, err = client("simulate", "-message", "om_sim", "-generation", "new")
	if err != nil || !strings.Contains(out, "已完成") || !strings.Contains(out, `"toast"`) {
		t.Errorf("simulate: %v\n%s", err, out)
	}
	out, err = client("simulate", "-message", "om_sim", "-button", "rollback")
	if err != nil || !strings.Contains(out, "{}") {
		t.Errorf("simulate another button: %v\n%s", err, out)
	}
	// A signature the server cannot verify fails the simulation.
	env["FEISHU_VERIFICATION_TOKEN"] = "wrong"
	out, err = client("simulate", "-message", "om_sim2")
	env["FEISHU_VERIFICATION_TOKEN"] = testToken
	if err == nil || !strings.Contains(out, "HTTP 401") {
		t.Errorf("simulate with a wrong token: got %v, want a failure\n%s", err, out)
	}

	for _, gen := range []string{"legacy", "new"} {
		out, err = client("loadtest", "-cards", "50", "-concurrency", "4", "-duration", "300ms", "-generation", gen)
		if err != nil || !strings.Contains(out, "first clicks") || !strings.Contains(out, "status  200:") || strings.Contains(out, "unexpected") {
			t.Errorf("loadtest %s: %v\n%s", gen, err, out)
		}
	}
	out, err = client("loadtest", "-challenge", "-concurrency", "2", "-duration", "200ms")
	if err != nil || !strings.Contains(out, "challenges") {
		t.Errorf("loadtest -challenge: %v\n%s", err, out)
	}
	file := t.TempDir() + "/reqs"
	out, err = client("loadtest", "-cards", "10", "-emit", file, "-requests", "20")
	if err != nil || !strings.Contains(out, "wrote 20 requests") {
		t.Errorf("loadtest -emit: %v\n%s", err, out)
	}
	// A server that answers wrongly fails the load test.
	env["CARDCALLBACK_ADMIN_TOKEN"] = "wrong"
	_, err = client("loadtest", "-cards", "5", "-duration", "100ms")
	env["CARDCALLBACK_ADMIN_TOKEN"] = testAdmin
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("loadtest with a wrong admin token: got %v, want a failure", err)
	}
	cancel()
	if err := wait(); err != nil {
		t.Error(err)
	}
}

func TestLoadtestReportFailsOnBadAnswers(t *testing.T) {
	var out bytes.Buffer
	err := report(&out, []result{{first: true, status: 200}, {status: 500}, {status: 200, bad: "not the done card"}}, time.Second, false)
	if err == nil || !strings.Contains(err.Error(), "2 answers") {
		t.Errorf("got %v, want 2 bad answers counted", err)
	}
	if !strings.Contains(out.String(), "500: 1") {
		t.Errorf("status counts missing:\n%s", out.String())
	}
}

func TestLogSinkFlushesWarningsAtOnce(t *testing.T) {
	var out syncBuffer
	sink := newLogSink(&out)
	log := newLogger("text", sink)
	log.Info("routine")
	if out.String() != "" {
		t.Errorf("an INFO line was written at once: %q", out.String())
	}
	log.Warn("attention")
	if !strings.Contains(out.String(), "routine") || !strings.Contains(out.String(), "attention") {
		t.Errorf("a WARN line did not flush: %q", out.String())
	}
	log.With("k", "v").Error("grouped")
	if !strings.Contains(out.String(), "grouped") {
		t.Errorf("a derived logger lost the flush: %q", out.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	log.Info("last")
	done := make(chan struct{})
	go func() { sink.run(ctx); close(done) }()
	cancel()
	<-done
	if !strings.Contains(out.String(), "last") {
		t.Errorf("stopping did not flush: %q", out.String())
	}
}

func TestRunDropsSlowClients(t *testing.T) {
	// A client that never finishes its request headers is cut off after
	// the header limit (5 s, up to 2 s more: see connTimeouts) instead of
	// holding the connection, and the cut is counted.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, _, wait := startRun(t, ctx, nil, map[string]string{})
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "POST /webhook/card HTTP/1.1\r\nHost: x\r\n")
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still held the connection after 30 s")
	}
	if len(b) > 0 {
		t.Errorf("got %q, want the connection closed", b)
	}
	res, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	// Open: only the connection this request came on.
	for _, want := range []string{`cardcallback_connection_timeouts_total{phase="header"} 1`, "cardcallback_open_connections 1\n"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s:\n%s", want, metrics)
		}
	}
	cancel()
	if err := wait(); err != nil {
		t.Error(err)
	}
}

func TestBackgroundStopWaitsForTheLoop(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	defer cancelParent()
	ended := false
	stop := background(parent, func(ctx context.Context) {
		<-ctx.Done()
		ended = true
	})
	stop() // must cancel the loop's context and wait for it
	if !ended {
		t.Error("stop returned before the loop did")
	}

	// The parent's end ends the loop too.
	done := make(chan struct{})
	stop = background(parent, func(ctx context.Context) { <-ctx.Done(); close(done) })
	cancelParent()
	select {
	case <-done:
	case <-time.After(30 * time.Second): // a safety net
		t.Fatal("the loop outlived its parent context")
	}
	stop()
}

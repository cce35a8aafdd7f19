package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// buildBinary builds the program once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cardcallback")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is the real binary running as a server.
type proc struct {
	cmd  *exec.Cmd
	base string
	logs *syncBuffer
	read <-chan struct{} // closed once stderr is read to its end
}

func startBinary(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "FEISHU_VERIFICATION_TOKEN="+testToken, "CARDCALLBACK_ADMIN_TOKEN="+testAdmin)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, logs: &syncBuffer{}}
	addr, read := watchLog(stderr, p.logs)
	p.read = read
	select {
	case a, ok := <-addr:
		if !ok {
			cmd.Wait()
			t.Fatalf("the server did not start:\n%s", p.logs)
		}
		p.base = "http://" + a
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the server did not start in time")
	}
	return p
}

func (p *proc) kill() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait()
}

// wait waits for the process to exit. Its stderr is read to the end first:
// Wait closes the pipe, and lines not yet read would be lost.
func (p *proc) wait() error {
	<-p.read
	return p.cmd.Wait()
}

var crashClient = &http.Client{Timeout: 30 * time.Second}

func (p *proc) admin(method, path string, body []byte) (int, []byte, error) {
	r := platformRequest{Body: body, Header: http.Header{"Authorization": {"Bearer " + testAdmin}}}
	return send(context.Background(), crashClient, method, p.base+path, r)
}

func (p *proc) click(msg string) (int, []byte, error) {
	r := newSigner(testToken, "").seal(Legacy, legacyBody(testClick(msg)), sealClick, "1700000000", randomID(8))
	return send(context.Background(), crashClient, "POST", p.base+"/webhook/card", r)
}

// crashLedger is what the load acknowledged, and so must survive.
type crashLedger struct {
	mu      sync.Mutex
	cards   map[string][]byte // PUT acknowledged
	done    map[string]bool   // click answered with the done card
	pending map[string]bool   // click sent, answer not received
}

// countRuns counts how often the logic ran per message id.
func countRuns(t *testing.T, path string) map[string]int {
	b, _ := os.ReadFile(path)
	n := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if line != "" {
			n[line]++
		}
	}
	return n
}

// TestCrashRecovery runs the real binary on a data file, hammers it with
// concurrent PUTs and clicks, kills it with SIGKILL at a random moment,
// restarts it, and checks that every acknowledged write is there, intact,
// and that no click answered done runs its logic again. Rounds default to
// 3; CARDCALLBACK_CRASH_ROUNDS=200 makes a crash loop.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("CARDCALLBACK_CRASH_ROUNDS")); err == nil {
		rounds = n
	}
	bin := buildBinary(t)
	dir := t.TempDir()
	data, runs := filepath.Join(dir, "cards.db"), filepath.Join(dir, "runs.log")
	args := []string{"-data", data, "-exec", `echo "$CARD_MESSAGE_ID" >> "` + runs + `"`}
	ledger := &crashLedger{cards: map[string][]byte{}, done: map[string]bool{}, pending: map[string]bool{}}
	doneRuns := map[string]int{} // runs per done id, once it was seen done after a restart

	for round := 0; round <= rounds; round++ {
		p := startBinary(t, bin, args...)
		verifyLedger(t, p, ledger, runs, doneRuns)
		if t.Failed() {
			p.kill()
			t.Fatalf("round %d: lost acknowledged state; server logs:\n%s", round, p.logs)
		}
		if round == rounds {
			p.kill()
			break
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hammer(p, ledger, fmt.Sprintf("r%dw%d", round, w), stop)
			}()
		}
		time.Sleep(time.Duration(50+rand.IntN(250)) * time.Millisecond) // the random moment of the crash
		p.kill()
		close(stop)
		wg.Wait()
	}
	ledger.mu.Lock()
	defer ledger.mu.Unlock()
	if len(ledger.done) == 0 || len(ledger.cards) == 0 {
		t.Errorf("the load acknowledged %d cards and %d clicks: the test proved nothing", len(ledger.cards), len(ledger.done))
	}
	t.Logf("%d rounds: %d acknowledged cards, %d done clicks survived", rounds, len(ledger.cards), len(ledger.done))
}

// hammer PUTs new cards and clicks them until the server dies.
func hammer(p *proc, l *crashLedger, prefix string, stop chan struct{}) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		id := fmt.Sprintf("om_%s_%d", prefix, i)
		card := []byte(fmt.Sprintf(`{"config":{"update_multi":true},"i18n_elements":{"zh_cn":[{"tag":"div","n":"%s","pad":"%s"}]}}`, id, strings.Repeat("x", 1500)))
		code, _, err := p.admin("PUT", "/cards/"+id, card)
		if err != nil {
			return
		}
		if code != http.StatusNoContent {
			continue
		}
		l.mu.Lock()
		l.cards[id] = card
		l.pending[id] = true
		l.mu.Unlock()
		if i%2 == 1 {
			continue // leave some cards unclicked
		}
		code, body, err := p.click(id)
		if err != nil {
			return
		}
		want, _ := doneCard(card)
		l.mu.Lock()
		if code == 200 && jsonEqual(body, want) {
			l.done[id] = true
			delete(l.pending, id)
		}
		l.mu.Unlock()
	}
}

// verifyLedger checks every acknowledged card and done click on a freshly
// started server, and that done clicks do not run again.
func verifyLedger(t *testing.T, p *proc, l *crashLedger, runs string, doneRuns map[string]int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, card := range l.cards {
		code, got, err := p.admin("GET", "/cards/"+id, nil)
		if err != nil || code != 200 {
			t.Errorf("%s: acknowledged card missing: %d %v", id, code, err)
			continue
		}
		done, _ := doneCard(card)
		switch {
		case l.done[id] && !jsonEqual(got, done):
			t.Errorf("%s: acknowledged done card lost: got %s", id, got)
		case !jsonEqual(got, card) && !jsonEqual(got, done):
			t.Errorf("%s: card damaged: got %s", id, got)
		}
	}
	before := countRuns(t, runs)
	for id := range l.done {
		if _, ok := doneRuns[id]; !ok {
			doneRuns[id] = before[id]
		}
		code, got, err := p.click(id)
		done, _ := doneCard(l.cards[id])
		if err != nil || code != 200 || !jsonEqual(got, done) {
			t.Errorf("%s: a repeat click of a done button got %d %s %v, want the done card", id, code, got, err)
		}
	}
	after := countRuns(t, runs)
	for id, n := range doneRuns {
		if after[id] != n {
			t.Errorf("%s: the logic of a done click ran again (%d runs, was %d)", id, after[id], n)
		}
	}
}

// TestBinaryDrainsOnSIGTERM sends SIGTERM to the real binary while a click
// waits for its logic: the click is still answered, then the process exits
// cleanly.
func TestBinaryDrainsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	fifo := filepath.Join(t.TempDir(), "go")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinary(t, buildBinary(t), "-respond-within", "2.5s", "-exec", `read line < "`+fifo+`"`)
	ran := make(chan struct{})
	type answer struct {
		code int
		body []byte
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		code, body, err := p.click("om_term")
		got <- answer{code, body, err}
	}()
	go func() {
		// The logic is running once the script holds the FIFO open.
		w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		close(ran)
		p.cmd.Process.Signal(syscall.SIGTERM)
		// Release the logic only once the server is shutting down, so the
		// click is in flight during the drain.
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if strings.Contains(p.logs.String(), "shutting down") {
				break
			}
		}
		w.Write([]byte("go\n"))
		w.Close()
	}()
	select {
	case <-ran:
	case <-time.After(60 * time.Second):
		t.Fatal("the logic did not start")
	}
	a := <-got
	if a.err != nil || a.code != 200 || !jsonEqual(a.body, renderDone(nil)) {
		t.Errorf("the in-flight click got %d %s %v, want the done card", a.code, a.body, a.err)
	}
	if err := p.wait(); err != nil {
		t.Errorf("exit: %v, want a clean exit\n%s", err, p.logs)
	}
	if logs := p.logs.String(); !strings.Contains(logs, "shutting down") || !strings.Contains(logs, `"msg":"stopped"`) {
		t.Errorf("no clean stop in the logs:\n%s", p.logs)
	}
}

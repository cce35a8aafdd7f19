package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newLogicContext is the context of a run of the logic that started at
// start, as the runner makes it in a flight.
func newLogicContext(parent context.Context, start time.Time, timeout time.Duration) *logicContext {
	c := new(logicContext)
	c.init(parent, start, timeout)
	return c
}

func testEnviron() []string {
	return []string{"PATH=" + os.Getenv("PATH"), "KEEP_ME=1", "FEISHU_APP_SECRET=app-secret", "FEISHU_VERIFICATION_TOKEN=x",
		"CARDCALLBACK_ADMIN_TOKEN=adm", "CARD_OPEN_ID=stale"}
}

func TestExecLogicContract(t *testing.T) {
	dir := t.TempDir()
	script := `env > "$OUT/env"; cat > "$OUT/stdin"; echo "$@" > "$OUT/args"`
	logic := execLogic(script, append(testEnviron(), "OUT="+dir))
	c := testClick("om_1")
	c.ButtonType, c.ButtonID = PublishButton, "b1"
	c.Value = json.RawMessage(`{"button_type":"public_publish","button_id":"b1","extra":"$(touch /tmp/pwned)"}`)
	if err := logic(context.Background(), c); err != nil {
		t.Fatalf("got %v, want success", err)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "env"))
	vars := map[string]string{}
	for _, line := range strings.Split(string(env), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			vars[k] = v
		}
	}
	for k, want := range map[string]string{
		"CARD_OPEN_ID": "ou_op", "CARD_USER_ID": "u_op", "CARD_UNION_ID": "on_op", "CARD_MESSAGE_ID": "om_1",
		"CARD_CHAT_ID": "oc_1", "CARD_TENANT_KEY": "tk", "CARD_BUTTON_TYPE": "public_publish", "CARD_BUTTON_ID": "b1",
		"CARD_EVENT_ID": c.EventID, "KEEP_ME": "1",
	} {
		if vars[k] != want {
			t.Errorf("%s: got %q, want %q", k, vars[k], want)
		}
	}
	for _, k := range []string{"FEISHU_APP_SECRET", "FEISHU_VERIFICATION_TOKEN", "CARDCALLBACK_ADMIN_TOKEN"} {
		if _, ok := vars[k]; ok {
			t.Errorf("%s reached the command", k)
		}
	}
	if strings.Contains(string(env), "c-tok") {
		t.Error("the update token reached the command")
	}
	stdin, _ := os.ReadFile(filepath.Join(dir, "stdin"))
	sameJSON(t, stdin, c.Value)
	if args, _ := os.ReadFile(filepath.Join(dir, "args")); strings.TrimSpace(string(args)) != "" {
		t.Errorf("the command got arguments %q, want none", args)
	}
}

func TestExecLogicFailure(t *testing.T) {
	for _, tc := range []struct {
		name, script, want string
	}{
		{"last stderr line", `echo starting >&2; echo "deploy API said 503" >&2; echo "  " >&2; exit 3`, "deploy API said 503"},
		{"stdout is not the reason", `echo "all good"; exit 4`, "command failed: exit status 4"},
		{"killed by a signal", `kill -9 $$`, "command failed: signal: killed"},
		{"not found", `/nonexistent/deploy`, "/nonexistent/deploy: not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := execLogic(tc.script, testEnviron())(context.Background(), testClick("om_1"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestExecLogicTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pid")
	// The script starts a grandchild and waits: only killing the whole
	// group ends both.
	script := `sleep 1000 & echo $! > "` + pidFile + `.tmp"; mv "` + pidFile + `.tmp" "` + pidFile + `"; wait`
	ctx, cancel := context.WithCancelCause(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- execLogic(script, testEnviron())(ctx, testClick("om_1")) }()
	waitFor(t, "the grandchild to start", func() bool { _, err := os.Stat(pidFile); return err == nil })
	cancel(errors.New("timed out after 10m"))
	select {
	case err := <-errc:
		if err == nil || err.Error() != "timed out after 10m" {
			t.Fatalf("got %v, want the timeout as the reason", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the command was not killed")
	}
	b, _ := os.ReadFile(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the grandchild to die", func() bool { return !processAlive(pid) })
}

// processAlive reports whether pid runs (a zombie does not count).
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z"
}

// waitFor polls cond until it holds; the deadline is only a safety net.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSafeRun(t *testing.T) {
	ctx, cancel := context.WithTimeoutCause(context.Background(), time.Nanosecond, errors.New("timed out after 1ns"))
	defer cancel()
	<-ctx.Done()
	err := safeRun(ctx, func(ctx context.Context, c Click) error { return ctx.Err() }, Click{})
	if err == nil || err.Error() != "timed out after 1ns" {
		t.Errorf("got %v, want the context's cause", err)
	}
	err = safeRun(context.Background(), func(context.Context, Click) error { panic(errors.New("runtime error in the logic")) }, Click{})
	if err == nil || err.Error() != "logic panicked: runtime error in the logic" {
		t.Errorf("got %v, want a panic turned into an error", err)
	}
}

func TestTailWriter(t *testing.T) {
	w := &tailWriter{max: 16}
	w.Write([]byte(strings.Repeat("noise\n", 100)))
	w.Write([]byte("the reason\n\n"))
	if got := w.lastLine(); got != "the reason" {
		t.Errorf("got %q, want %q", got, "the reason")
	}
}

func TestLogicContext(t *testing.T) {
	parent := contextWithRequestID(context.Background(), "cc-9")
	t.Run("untouched until asked", func(t *testing.T) {
		c := newLogicContext(parent, time.Now(), time.Hour)
		if requestID(c) != "cc-9" || c.Err() != nil {
			t.Fatalf("request id %q, err %v", requestID(c), c.Err())
		}
		if c.live.Load() != nil {
			t.Error("Value and Err made a timer the logic never needed")
		}
		if d, ok := c.Deadline(); !ok || time.Until(d) < 59*time.Minute {
			t.Errorf("deadline %v %v, want an hour from now", d, ok)
		}
		c.release()
		if !errors.Is(c.Err(), context.Canceled) {
			t.Errorf("after release: err %v, want canceled", c.Err())
		}
	})
	t.Run("timeout", func(t *testing.T) {
		c := newLogicContext(parent, time.Now().Add(-time.Minute), 30*time.Second) // already past
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Fatalf("err %v, want deadline exceeded", c.Err())
		}
		<-c.Done()
		if got := ctxReason(c).Error(); got != "timed out after 30s" {
			t.Errorf("cause %q", got)
		}
		if requestID(c) != "cc-9" {
			t.Error("the request id was lost")
		}
	})
	t.Run("timeout reaches derived contexts", func(t *testing.T) {
		c := newLogicContext(parent, time.Now(), 10*time.Millisecond)
		child, cancel := context.WithCancel(c)
		defer cancel()
		fired := make(chan struct{})
		context.AfterFunc(c, func() { close(fired) })
		select {
		case <-child.Done():
		case <-time.After(time.Minute):
			t.Fatal("a context derived from the logic's did not end at the timeout")
		}
		<-fired
		if got := context.Cause(child).Error(); got != "timed out after 10ms" {
			t.Errorf("derived cause %q", got)
		}
		c.release()
	})
	t.Run("parent ends", func(t *testing.T) {
		p, stop := context.WithCancelCause(parent)
		c := newLogicContext(p, time.Now(), time.Hour)
		done := c.Done()
		stop(errInterrupted)
		<-done
		if !errors.Is(ctxReason(c), errInterrupted) {
			t.Errorf("cause %v, want %v", ctxReason(c), errInterrupted)
		}
		p2, stop2 := context.WithCancelCause(parent)
		stop2(errInterrupted)
		if c2 := newLogicContext(p2, time.Now(), time.Hour); !errors.Is(c2.Err(), context.Canceled) || !errors.Is(ctxReason(c2), errInterrupted) {
			t.Errorf("parent ended before the first look: err %v, cause %v", c2.Err(), ctxReason(c2))
		}
	})
	t.Run("asked after release", func(t *testing.T) {
		c := newLogicContext(parent, time.Now(), time.Hour)
		c.release()
		select {
		case <-c.Done():
		default:
			t.Error("a context first asked for after the logic returned is not done")
		}
	})
}

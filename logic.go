package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Logic is the business logic of a public_publish click: the full release.
// A nil error is success; an error's text is shown to the user (at most 200
// characters). It must honour ctx, which ends at the logic timeout or on
// shutdown. A Go user plugs their own in businessLogic (main.go).
type Logic func(ctx context.Context, c Click) error

// logOnly is the built-in logic: it logs the click and succeeds.
func logOnly(log *slog.Logger) Logic {
	return func(ctx context.Context, c Click) error {
		logFast(ctx, log, slog.LevelInfo, "full release requested (built-in logic: nothing to run)",
			slog.String("message_id", c.MessageID), slog.String("open_id", c.OpenID), slog.String("button_id", c.ButtonID))
		return nil
	}
}

// execLogic runs command through /bin/sh -c for each click, with the click
// in CARD_* variables and action.value on stdin; click data never reaches
// the command line. environ is the server's environment; secrets are
// removed from it. On failure the reason is the last non-empty line the
// command wrote to stderr, or its exit status.
func execLogic(command string, environ []string) Logic {
	base := make([]string, 0, len(environ))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "FEISHU_") || name == "CARDCALLBACK_ADMIN_TOKEN" || strings.HasPrefix(name, "CARD_") {
			continue
		}
		base = append(base, kv)
	}
	return func(ctx context.Context, c Click) error {
		cmd := exec.Command("/bin/sh", "-c", command)
		cmd.Env = append(base[:len(base):len(base)],
			"CARD_OPEN_ID="+c.OpenID,
			"CARD_USER_ID="+c.UserID,
			"CARD_UNION_ID="+c.UnionID,
			"CARD_MESSAGE_ID="+c.MessageID,
			"CARD_CHAT_ID="+c.ChatID,
			"CARD_TENANT_KEY="+c.TenantKey,
			"CARD_BUTTON_TYPE="+c.ButtonType,
			"CARD_BUTTON_ID="+c.ButtonID,
			"CARD_EVENT_ID="+c.EventID,
		)
		cmd.Stdin = bytes.NewReader(c.Value)
		stderr := &tailWriter{max: 8 << 10}
		cmd.Stderr = stderr
		cmd.Stdout = io.Discard
		// Its own process group, so a timeout kills whatever the script
		// started, not just the shell.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		// A script that leaves a background process holding stderr must
		// not keep the click waiting once the script itself has exited.
		cmd.WaitDelay = 2 * time.Second
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("cannot start command: %w", err)
		}
		done := make(chan struct{})
		killed := make(chan struct{})
		go func() {
			select {
			case <-ctx.Done():
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				close(killed)
			case <-done:
			}
		}()
		err := cmd.Wait()
		close(done)
		select {
		case <-killed:
			return ctxReason(ctx)
		default:
		}
		if err == nil {
			return nil
		}
		if line := stderr.lastLine(); line != "" {
			return errors.New(line)
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			return fmt.Errorf("command failed: %s", exit.ProcessState)
		}
		return fmt.Errorf("command failed: %w", err)
	}
}

// ctxReason says why the logic's context ended, in words for the user. The
// click runner sets the causes (a timeout, a shutdown).
func ctxReason(ctx context.Context) error {
	if cause := context.Cause(ctx); cause != nil {
		return cause
	}
	return errors.New("cancelled")
}

// tailWriter keeps the last max bytes written to it: enough to find the
// final line of a chatty script without holding all of its output.
type tailWriter struct {
	max int
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > w.max {
		p = p[len(p)-w.max:]
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) > w.max {
		w.buf = append(w.buf[:0], w.buf[len(w.buf)-w.max:]...)
	}
	return n, nil
}

func (w *tailWriter) lastLine() string {
	lines := strings.Split(string(w.buf), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if s := strings.TrimSpace(lines[i]); s != "" {
			return s
		}
	}
	return ""
}

// logicContext is the context a run of the logic gets: it ends at the
// logic timeout, with "timed out after …" as its cause, or when its parent
// (the runner's) does. Most logic never looks at its context, so the timer
// and the registration with the parent that ending it takes are made only
// when Done or Err first needs them: for such logic they were a measurable
// share of a first click.
type logicContext struct {
	parent   context.Context
	deadline time.Time
	timeout  time.Duration

	mu       sync.Mutex
	released bool
	live     atomic.Pointer[liveContext] // set once, under mu
}

type liveContext struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// init makes c the context of a run that started at start, in place: the
// runner keeps it in the run's flight, which it allocates anyway.
func (c *logicContext) init(parent context.Context, start time.Time, timeout time.Duration) {
	c.parent, c.deadline, c.timeout = parent, start.Add(timeout), timeout
}

// real returns the context that carries the timer and the parent's
// cancellation, making it on the first call.
func (c *logicContext) real() context.Context {
	if l := c.live.Load(); l != nil {
		return l.ctx
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if l := c.live.Load(); l != nil {
		return l.ctx
	}
	ctx, cancel := context.WithDeadlineCause(c.parent, c.deadline, fmt.Errorf("timed out after %s", c.timeout))
	if c.released {
		cancel() // asked for by something the logic left running
	}
	c.live.Store(&liveContext{ctx, cancel})
	return ctx
}

// release ends the context once the logic has returned.
func (c *logicContext) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.released = true
	if l := c.live.Load(); l != nil {
		l.cancel()
	}
}

func (c *logicContext) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *logicContext) Done() <-chan struct{} { return c.real().Done() }

func (c *logicContext) Err() error {
	if c.live.Load() == nil && !c.isReleased() && c.parent.Err() == nil && time.Now().Before(c.deadline) {
		return nil
	}
	return c.real().Err()
}

func (c *logicContext) isReleased() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.released
}

// Value answers from the real context once there is one, so that
// context.Cause finds its cause.
func (c *logicContext) Value(key any) any {
	if l := c.live.Load(); l != nil {
		return l.ctx.Value(key)
	}
	return c.parent.Value(key)
}

// safeRun calls logic and turns a panic into a failure: a panic in user
// code must not take the server down. A logic that gives up because its
// context ended reports the context's cause, which says why in words.
func safeRun(ctx context.Context, logic Logic, c Click) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("logic panicked: %v", p)
		}
	}()
	err = logic(ctx, c)
	if err != nil && ctx.Err() != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		err = ctxReason(ctx)
	}
	return err
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// Outcome is what became of one callback, for logs and metrics.
type Outcome string

const (
	OutcomeSuccess      Outcome = "success"
	OutcomeFailure      Outcome = "failure"
	OutcomeIgnored      Outcome = "ignored"
	OutcomeUnauthorized Outcome = "unauthorized"
	OutcomeInProgress   Outcome = "in-progress"
	OutcomeRepeat       Outcome = "repeat"
	OutcomeRejected     Outcome = "rejected-verification"
	OutcomeBadRequest   Outcome = "bad-request"
	OutcomeChallenge    Outcome = "challenge"
)

// reply is the runner's answer to one click: the body to send and, for an
// in-progress answer, a function the handler must call once the body was
// written, so that the final card is pushed strictly after it (PROTOCOL §7).
type reply struct {
	body    answerBody
	outcome Outcome
	reason  string // why the logic failed, for the log
	written func()
}

// runner makes each button act exactly once: it runs the logic for the
// first click of a key, lets concurrent clicks of the same key wait for
// that outcome, answers later clicks from the recorded state, and, when the
// logic outlasts the answer budget, answers "in progress" and pushes the
// final card through the delayed-update API.
type runner struct {
	store         Store
	logic         Logic
	log           *slog.Logger
	allow         []string // global allow list; empty = anyone
	respondWithin time.Duration
	logicTimeout  time.Duration
	pusher        cardPusher // nil without app credentials
	metrics       *metrics
	now           func() time.Time

	// bg is the parent of all background work; stop cancels it with
	// errInterrupted as the cause.
	bg   context.Context
	stop context.CancelCauseFunc
	wg   sync.WaitGroup

	mu      sync.Mutex
	flights map[flightKey]*flight

	// work hands a flight to an idle worker (see start).
	work chan *flight
}

// workerIdle is how long a worker waits for another flight before it ends.
const workerIdle = 10 * time.Second

// cardPusher is the delayed-update API (PROTOCOL §7), implemented by the
// Feishu client.
type cardPusher interface {
	updateCard(ctx context.Context, token string, card []byte, openIDs []string) error
}

// errInterrupted is the failure recorded for logic cut short by shutdown.
var errInterrupted = errors.New("interrupted by shutdown")

var errUpdateTokenExpired = errors.New("the click's update token expired (30 minutes)")

// updateTokenLife is how long a click's update token may be used.
const updateTokenLife = 30 * time.Minute

type flightKey struct {
	msg string
	ClickKey
}

// flight is one run of the logic for one key.
type flight struct {
	key   flightKey
	click Click         // the click that runs the logic
	reqID string        // that click's request id, for the logic's log lines
	done  chan struct{} // closed when the outcome below is set

	mu       sync.Mutex
	finished bool
	err      error  // the logic's outcome
	card     []byte // the done card on success
	late     []lateClick
}

// lateClick is a click that was answered "in progress" and is owed the
// final card.
type lateClick struct {
	token    string
	openID   string
	expires  time.Time // the update token's end (PROTOCOL §7: 30 minutes)
	answered chan struct{}
}

type runnerConfig struct {
	allow         []string
	respondWithin time.Duration
	logicTimeout  time.Duration
	metrics       *metrics // nil: counted nowhere
}

func newRunner(st Store, logic Logic, log *slog.Logger, cfg runnerConfig, p cardPusher) *runner {
	bg, stop := context.WithCancelCause(context.Background())
	if cfg.metrics == nil {
		cfg.metrics = newMetrics()
	}
	return &runner{
		store: st, logic: logic, log: log, pusher: p, now: time.Now, metrics: cfg.metrics,
		allow: cfg.allow, respondWithin: cfg.respondWithin, logicTimeout: cfg.logicTimeout,
		bg: bg, stop: stop, flights: make(map[flightKey]*flight), work: make(chan *flight),
	}
}

// click handles one verified click. start is when the request arrived; the
// answer budget counts from then.
func (r *runner) click(ctx context.Context, c Click, start time.Time) reply {
	if !c.IsPublish() {
		return reply{body: answerBody{head: emptyAnswer}, outcome: OutcomeIgnored}
	}
	fk := flightKey{c.MessageID, c.Key()}
	r.mu.Lock()
	// Read the record under r.mu: an ending flight records its outcome in
	// the store before it leaves r.flights.
	rec, _ := r.store.Get(c.MessageID)
	if !r.allowed(rec, c) {
		r.mu.Unlock()
		r.log.WarnContext(ctx, "click by someone not on the allow list",
			"message_id", c.MessageID, "open_id", c.OpenID, "user_id", c.UserID, "union_id", c.UnionID)
		return reply{body: answer(c.Generation, &toastNotAllowed, nil), outcome: OutcomeUnauthorized}
	}
	f := r.flights[fk]
	if f == nil {
		if st, ok := rec.Click(fk.ClickKey); ok && st.Status == StatusDone {
			r.mu.Unlock()
			return r.repeat(c, rec)
		}
		f = &flight{key: fk, click: c, reqID: requestID(ctx), done: make(chan struct{})}
		r.flights[fk] = f
		r.wg.Add(1)
		r.mu.Unlock()
		r.start(f)
	} else {
		r.mu.Unlock()
	}

	timer := timers.Get().(*time.Timer)
	timer.Reset(time.Until(start.Add(r.respondWithin)))
	defer func() { timer.Stop(); timers.Put(timer) }()
	select {
	case <-f.done:
		return r.finalReply(c, f)
	case <-timer.C:
	case <-ctx.Done():
	}

	f.mu.Lock()
	if f.finished {
		f.mu.Unlock()
		return r.finalReply(c, f)
	}
	lc := lateClick{token: c.Token, openID: c.OpenID, expires: start.Add(updateTokenLife), answered: make(chan struct{})}
	f.late = append(f.late, lc)
	f.mu.Unlock()

	var card []byte
	if rec != nil {
		card = rec.Card
	}
	t := &toastProgress
	if c.Generation == Legacy {
		t = nil
	}
	var once sync.Once
	return reply{
		body:    answer(c.Generation, t, renderProgress(card)),
		outcome: OutcomeInProgress,
		written: func() { once.Do(func() { close(lc.answered) }) },
	}
}

// timers holds stopped timers for the answer budget. (A stopped timer
// delivers no stale tick after Stop: go.mod's Go version has the timer
// semantics of Go 1.23.)
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// allowed applies the card's allow list, else the global one.
func (r *runner) allowed(rec *Record, c Click) bool {
	list := r.allow
	if rec != nil && len(rec.Allow) > 0 {
		list = rec.Allow
	}
	if len(list) == 0 {
		return true
	}
	for _, id := range c.Operator() {
		if id != "" && slices.Contains(list, id) {
			return true
		}
	}
	return false
}

// repeat answers a click on a key that is already done.
func (r *runner) repeat(c Click, rec *Record) reply {
	card := rec.Card
	if card == nil {
		card = renderDone(nil)
	}
	return reply{body: answer(c.Generation, &toastRepeat, card), outcome: OutcomeRepeat}
}

func (r *runner) finalReply(c Click, f *flight) reply {
	if f.err != nil {
		t := toastFailed(f.err.Error())
		return reply{body: answer(c.Generation, &t, nil), outcome: OutcomeFailure, reason: f.err.Error()}
	}
	return reply{body: answer(c.Generation, &toastDone, f.card), outcome: OutcomeSuccess}
}

// start runs a flight on an idle worker, or on a new one when none is
// idle. Workers outlive their flight: a first click then costs neither a
// new goroutine nor growing its stack to what the logic and its logging
// need, which together were a measurable share of a first click.
func (r *runner) start(f *flight) {
	select {
	case r.work <- f:
	default:
		go r.worker(f)
	}
}

// worker executes f, then the flights handed to it, until it has been idle
// for workerIdle or the runner stops.
func (r *runner) worker(f *flight) {
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		r.execute(f)
		idle.Reset(workerIdle)
		select {
		case f = <-r.work:
		case <-idle.C:
			return
		case <-r.bg.Done():
			return
		}
	}
}

// execute runs the logic for a flight, records the outcome, releases the
// waiters and pushes the final card to the clicks that were answered
// "in progress".
func (r *runner) execute(f *flight) {
	defer r.wg.Done()
	fk, c := f.key, f.click
	// The logic's context, and the one its outcome is logged with: the
	// runner's, carrying the click's request id.
	ctx := contextWithRequestID(r.bg, f.reqID)
	started := r.now()
	st := ClickState{Key: fk.ClickKey, Status: StatusRunning, Operator: c.OpenID, Started: started}
	// Nothing waits on "running" reaching the disk: it goes with the
	// outcome's write. A crash before that leaves no trace or a running
	// state, and either way the click can be tried again.
	err := r.store.UpdateNoWait(fk.msg, func(cur *Record) *Record { return cur.withClick(st, nil, started) })
	if err != nil {
		err = fmt.Errorf("cannot record the click: %w", err)
		st.Finished = r.now()
	} else {
		lctx := newLogicContext(ctx, started, r.logicTimeout)
		err = safeRun(lctx, r.logic, c)
		lctx.release()
		st.Finished = r.now()
		r.metrics.logic.observe(st.Finished.Sub(started))
	}

	var final, original []byte
	if err == nil {
		st.Status = StatusDone
	} else {
		st.Status, st.Reason = StatusFailed, truncateReason(err.Error())
		err = errors.New(st.Reason)
	}
	werr := r.store.Update(fk.msg, func(cur *Record) *Record {
		final, original = nil, nil
		if cur != nil {
			original = cur.Card
		}
		if st.Status == StatusDone {
			if cur != nil && cur.Done != nil {
				final = cur.Done
			} else {
				final = renderDone(original)
			}
		}
		return cur.withClick(st, final, st.Finished)
	})
	if werr != nil {
		r.log.ErrorContext(ctx, "cannot record the outcome of a click; a later click may run the logic again",
			"message_id", fk.msg, "button_type", fk.ButtonType, "status", st.Status, "err", werr)
	}

	r.mu.Lock()
	delete(r.flights, fk)
	f.mu.Lock()
	f.err, f.card, f.finished = err, final, true
	late := f.late
	f.mu.Unlock()
	close(f.done)
	r.mu.Unlock()

	if len(late) == 0 {
		return // the callback's own log line tells the outcome
	}
	r.log.InfoContext(ctx, "logic finished after the answer budget", "message_id", fk.msg, "button_type", fk.ButtonType, "button_id", fk.ButtonID,
		"open_id", c.OpenID, "status", st.Status, "reason", st.Reason, "duration", st.Finished.Sub(started))
	push := final
	if err != nil {
		push = renderFailed(original, st.Reason)
	}
	r.pushAll(ctx, fk.msg, push, late, isExclusive(push))
}

// pushAll sends the final card to the clicks answered "in progress". A
// shared card needs one update, made with the newest token; an exclusive
// card is updated for each operator with that operator's token.
func (r *runner) pushAll(ctx context.Context, msg string, card []byte, late []lateClick, exclusive bool) {
	if r.pusher == nil {
		r.metrics.pushes.inc("no-credentials")
		r.log.WarnContext(ctx, "the final card cannot be pushed: no app credentials (set FEISHU_APP_ID and FEISHU_APP_SECRET); a new click shows it",
			"message_id", msg)
		return
	}
	if !exclusive {
		late = late[len(late)-1:]
	}
	seen := make(map[string]bool)
	for i := len(late) - 1; i >= 0; i-- {
		lc := late[i]
		if seen[lc.openID] {
			continue
		}
		seen[lc.openID] = true
		var ids []string
		if exclusive {
			ids = []string{lc.openID}
		}
		select {
		case <-lc.answered:
		case <-r.bg.Done():
			return
		}
		pctx, cancel := context.WithDeadlineCause(r.bg, lc.expires, errUpdateTokenExpired)
		err := r.pusher.updateCard(pctx, lc.token, card, ids)
		cancel()
		if err != nil {
			r.metrics.pushes.inc("failed")
			r.log.ErrorContext(ctx, "cannot push the final card", "message_id", msg, "open_id", lc.openID, "err", err)
		} else {
			r.metrics.pushes.inc("ok")
			r.log.InfoContext(ctx, "final card pushed", "message_id", msg, "open_id", lc.openID)
		}
	}
}

// shutdown waits for running logic and pushes until ctx ends, then cancels
// them: their outcome is recorded as failed ("interrupted by shutdown").
func (r *runner) shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	r.stop(errInterrupted)
	// Logic that honours its context ends at once; give it a moment to
	// record its outcome, but do not hang on logic that ignores it.
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		return errors.New("running logic ignored the shutdown and was abandoned")
	}
	return errors.New("running logic was interrupted by shutdown")
}

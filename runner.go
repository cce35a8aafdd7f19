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
// written and flushed, so that the final card is pushed strictly after it
// (PROTOCOL §7).
type reply struct {
	body    answerBody
	outcome Outcome
	reason  string // why the logic failed, for the log
	written func()
	// sent: the reply was already sent, in progress, through the sender
	// click was given; there is nothing left to write.
	sent bool
}

// runner makes each button act exactly once: the first click of a key runs
// the logic, concurrent clicks of the same key wait for that outcome, later
// clicks are answered from the recorded state, and when the logic outlasts
// the answer budget the click is answered "in progress" and the final card
// is pushed through the delayed-update API.
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
	wg   sync.WaitGroup // running logic and pushes

	mu      sync.Mutex
	flights map[flightKey]*flight
}

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
	click Click // the click that runs the logic
	// ctx is the runner's context with that click's request id: the
	// logic's, its outcome's log lines' and its pushes'.
	ctx  requestContext
	lctx logicContext  // the logic's own, under ctx
	done chan struct{} // closed when the outcome below is set

	mu       sync.Mutex
	finished bool
	err      error  // the logic's outcome
	card     []byte // the done card on success
	late     []lateClick
	// ownAnswered is set when the click running the logic was answered in
	// progress, and closed once that answer is written.
	ownAnswered chan struct{}
}

// lateClick is a click that was answered "in progress" and is owed the
// final card.
type lateClick struct {
	token    string
	openID   string
	expires  time.Time // the update token's end (PROTOCOL §7: 30 minutes)
	answered chan struct{}
}

// newLateClick is c, which arrived at start, as owed the final card.
func newLateClick(c Click, start time.Time) lateClick {
	return lateClick{token: c.Token, openID: c.OpenID, expires: start.Add(updateTokenLife), answered: make(chan struct{})}
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
		bg: bg, stop: stop, flights: make(map[flightKey]*flight),
	}
}

// sender sends a click's reply from another goroutine than the click's.
type sender interface{ send(reply) }

// click handles one verified click. start is when the request arrived; the
// answer budget counts from then.
//
// The first click of a key runs the logic on the caller's goroutine: a
// hand-off to another goroutine and back was a measurable share of a first
// click. If the logic outlasts the budget, s is sent the in-progress reply
// from another goroutine, and click returns, once the logic has ended, a
// reply that says it was sent.
func (r *runner) click(ctx context.Context, c Click, start time.Time, s sender) reply {
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
	if f := r.flights[fk]; f != nil {
		r.mu.Unlock()
		return r.wait(ctx, c, start, rec, f)
	}
	if st, ok := rec.Click(fk.ClickKey); ok && st.Status == StatusDone {
		r.mu.Unlock()
		return r.repeat(c, rec)
	}
	f := &flight{key: fk, click: c, done: make(chan struct{})}
	f.ctx = requestContext{Context: r.bg, id: requestID(ctx)}
	r.flights[fk] = f
	r.wg.Add(1)
	r.mu.Unlock()
	return r.run(ctx, f, rec, start, s)
}

// wait answers a click whose key another click's logic is running for:
// with that outcome if it comes within the budget, else in progress.
func (r *runner) wait(ctx context.Context, c Click, start time.Time, rec *Record, f *flight) reply {
	timer := timers.Get().(*time.Timer)
	timer.Reset(time.Until(start.Add(r.respondWithin)))
	defer func() { timer.Stop(); timers.Put(timer) }()
	select {
	case <-f.done:
		return r.finalReply(c, f)
	case <-timer.C:
	case <-ctx.Done():
	}
	lc, ok := f.addLate(c, start, false)
	if !ok {
		return r.finalReply(c, f)
	}
	return r.progressReply(c, rec, lc)
}

// addLate records c as owed the final card, unless the outcome is known;
// own says c is the click running the logic.
func (f *flight) addLate(c Click, start time.Time, own bool) (lateClick, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.finished {
		return lateClick{}, false
	}
	lc := newLateClick(c, start)
	f.late = append(f.late, lc)
	if own {
		f.ownAnswered = lc.answered
	}
	return lc, true
}

// progressReply is the in-progress answer of a click owed the final card.
func (r *runner) progressReply(c Click, rec *Record, lc lateClick) reply {
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

// run runs f's logic for its first click, on the caller's goroutine, with a
// budget that sends the click its in-progress answer if the logic outlasts
// it.
func (r *runner) run(ctx context.Context, f *flight, rec *Record, start time.Time, s sender) reply {
	defer r.wg.Done()
	b := budgets.Get().(*budget)
	b.r, b.f, b.rec, b.start, b.to = r, f, rec, start, s
	b.t.Reset(time.Until(start.Add(r.respondWithin)))
	out := r.execute(f)
	if b.t.Stop() {
		*b = budget{t: b.t}
		budgets.Put(b)
	} // else its expire has begun: it is not reused.

	f.mu.Lock()
	own := f.ownAnswered // set by expire, which ran before execute's end if at all
	f.mu.Unlock()
	c, late := f.click, out.late
	rep := r.finalReply(c, f)
	if own == nil && ctx.Err() != nil {
		// The platform gave up waiting on this click, or its connection
		// broke: push the outcome too, once the answer was tried, so that
		// the card shows it.
		lc := newLateClick(c, start)
		late = append(late, lc)
		rep.written = func() { close(lc.answered) }
	}
	if len(late) > 0 {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			card := out.card()
			r.pushAll(&f.ctx, f.key.msg, card, late, isExclusive(card))
		}()
	}
	if own != nil {
		<-own // the in-progress answer is written
		return reply{sent: true, outcome: OutcomeInProgress}
	}
	return rep
}

// budget is the answer budget of a click running the logic: a timer whose
// function sends the in-progress answer. Budgets are reused when their
// timer was stopped before it fired, which is every click whose logic
// ends in time.
type budget struct {
	t     *time.Timer
	r     *runner
	f     *flight
	rec   *Record
	start time.Time
	to    sender
}

var budgets = sync.Pool{New: func() any {
	b := new(budget)
	b.t = time.AfterFunc(time.Hour, b.expire)
	b.t.Stop()
	return b
}}

// expire answers the running click in progress, unless its logic has just
// ended.
func (b *budget) expire() {
	f := b.f
	lc, ok := f.addLate(f.click, b.start, true)
	if ok {
		b.to.send(b.r.progressReply(f.click, b.rec, lc))
	}
}

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

// outcome is what a run of the logic left to do.
type outcome struct {
	late     []lateClick // answered in progress: owed the final card
	failed   bool
	done     []byte // the done card, on success
	original []byte // the card the logic ran for, for the failed card
	reason   string
}

// card is the final card to push.
func (o outcome) card() []byte {
	if o.failed {
		return renderFailed(o.original, o.reason)
	}
	return o.done
}

// execute runs the logic for a flight, records the outcome and releases
// the waiters.
func (r *runner) execute(f *flight) outcome {
	fk, c := f.key, f.click
	ctx := &f.ctx
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
		lctx := &f.lctx
		lctx.init(ctx, started, r.logicTimeout)
		err = safeRun(lctx, r.logic, c)
		lctx.release()
		st.Finished = r.now()
		r.metrics.logic.observe(st.Finished.Sub(started))
	}

	var out outcome
	if err == nil {
		st.Status = StatusDone
	} else {
		st.Status, st.Reason = StatusFailed, truncateReason(err.Error())
		err = errors.New(st.Reason)
		out.failed, out.reason = true, st.Reason
	}
	werr := r.store.Update(fk.msg, func(cur *Record) *Record {
		out.done, out.original = nil, nil
		if cur != nil {
			out.original = cur.Card
		}
		if st.Status == StatusDone {
			if cur != nil && cur.Done != nil {
				out.done = cur.Done
			} else {
				out.done = renderDone(out.original)
			}
		}
		return cur.withClick(st, out.done, st.Finished)
	})
	if werr != nil {
		r.log.ErrorContext(ctx, "cannot record the outcome of a click; a later click may run the logic again",
			"message_id", fk.msg, "button_type", fk.ButtonType, "status", st.Status, "err", werr)
	}

	r.mu.Lock()
	delete(r.flights, fk)
	f.mu.Lock()
	f.err, f.card, f.finished = err, out.done, true
	out.late = f.late
	f.mu.Unlock()
	close(f.done)
	r.mu.Unlock()

	if len(out.late) > 0 {
		r.log.InfoContext(ctx, "logic finished after the answer budget", "message_id", fk.msg, "button_type", fk.ButtonType, "button_id", fk.ButtonID,
			"open_id", c.OpenID, "status", st.Status, "reason", st.Reason, "duration", st.Finished.Sub(started))
	}
	return out
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

// waitDone is closed once wg's count is zero.
func waitDone(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	return done
}

// shutdown waits for running logic and pushes until ctx ends, then cancels
// them: their outcome is recorded as failed ("interrupted by shutdown").
func (r *runner) shutdown(ctx context.Context) error {
	done := waitDone(&r.wg)
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

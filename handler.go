package main

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// verifier proves that a callback comes from the platform (PROTOCOL §3)
// and opens encrypted envelopes (§4). With no verification token it is in
// development mode and proves nothing.
type verifier struct {
	*signer
	dev bool
}

var (
	errBadSignature = fmt.Errorf("%w: X-Lark-Signature does not match (check FEISHU_VERIFICATION_TOKEN and FEISHU_ENCRYPT_KEY)", errUnauthorized)
	errNoSignature  = fmt.Errorf("%w: the request carries no X-Lark-Signature", errUnauthorized)
	errBadToken     = fmt.Errorf("%w: token does not match FEISHU_VERIFICATION_TOKEN", errUnauthorized)
	errNoKey        = fmt.Errorf("%w: the body is encrypted but no Encrypt Key is configured (set FEISHU_ENCRYPT_KEY)", errBadRequest)
)

// signed holds what verification reads from the request headers.
type signed struct {
	timestamp, nonce, signature string
}

func signedFrom(h http.Header) signed {
	return signed{header(h, "X-Lark-Request-Timestamp"), header(h, "X-Lark-Request-Nonce"), header(h, "X-Lark-Signature")}
}

// header is h.Get for a key already in canonical form, without
// canonicalizing it again on every request. Names are still matched
// case-insensitively: net/http canonicalizes those it reads.
func header(h http.Header, canonicalKey string) string {
	if v := h[canonicalKey]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// open verifies and decodes one callback body. The signature is checked over
// the raw bytes before anything is decoded; what it proves is then required
// of the kind of body found inside.
func (v *verifier) open(sig signed, body []byte, in *inbound) (kind, error) {
	signatureOK := false
	if !v.dev && sig.signature != "" {
		// The signature's length names its hash: 40 hex digits are the
		// legacy SHA-1, 64 the new generation's SHA-256.
		switch len(sig.signature) {
		case 2 * sha1.Size:
			signatureOK = v.legacySigned(sig.signature, sig.timestamp, sig.nonce, body)
		case 2 * sha256.Size:
			signatureOK = v.block != nil && v.newSigned(sig.signature, sig.timestamp, sig.nonce, body)
		}
		if !signatureOK {
			return 0, errBadSignature
		}
	}
	if err := decodeInbound(body, in); err != nil {
		return 0, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	if in.Encrypt != nil {
		if v.block == nil {
			return 0, errNoKey
		}
		// The plaintext is only decoded from: nothing keeps a reference
		// into it, and its buffer is reused.
		bp := bodyPool.Get().(*[]byte)
		defer bodyPool.Put(bp)
		plain, used, err := v.decryptInto(*bp, in.Encrypt)
		if cap(used) <= 64<<10 {
			*bp = used[:0]
		}
		if err != nil {
			return 0, fmt.Errorf("%w: %v", errBadRequest, err)
		}
		*in = inbound{}
		if err := decodeInbound(plain, in); err != nil {
			return 0, fmt.Errorf("%w: decrypted %v", errBadRequest, err)
		}
		if in.Encrypt != nil {
			return 0, fmt.Errorf("%w: envelope inside an envelope", errBadRequest)
		}
	}
	k := in.kind()
	if v.dev {
		return k, nil
	}
	switch {
	case k == kindChallenge:
		// A challenge carries no signature headers (PROTOCOL §2.3).
		if !v.tokenMatches(in.Token) {
			return 0, errBadToken
		}
	case signatureOK:
	case k == kindNew && v.block == nil:
		// Without an Encrypt Key the new generation is not signed.
		if !v.tokenMatches(in.Header.Token) {
			return 0, errBadToken
		}
	default:
		return 0, errNoSignature
	}
	return k, nil
}

func (v *verifier) tokenMatches(token string) bool {
	return subtle.ConstantTimeCompare([]byte(token), v.verificationToken) == 1
}

// callbackHandler serves the card request URL: the challenge and both
// generations of click (PROTOCOL §1).
type callbackHandler struct {
	log *slog.Logger
	v   *verifier
	rn  *runner
	m   *metrics
	ids *requestIDs
	// dates is the Date header of the answers' second.
	dates dateCache
}

// ServeHTTP answers the callback r, tagged with its request id here (see
// newServer).
func (h *callbackHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a := &callbackAnswer{h: h, w: w, start: time.Now()}
	a.ctx.tag(h.ids, w, r)
	rep, err := serveCallback(r, h.v, h.rn, a)
	if err != nil {
		outcome := OutcomeBadRequest
		if errors.Is(err, errUnauthorized) {
			outcome = OutcomeRejected
		}
		took := time.Since(a.start)
		h.log.WarnContext(&a.ctx, "callback refused", "outcome", outcome, "err", err, "duration", took)
		writeError(w, h.log, r.WithContext(&a.ctx), err)
		h.m.callbacks.inc("unknown", string(outcome))
		h.m.answer.observe(took)
		return
	}
	if !rep.sent {
		a.write(rep)
	}
}

// callbackAnswer is the answer to one callback, which arrived at start:
// the runner may send it from another goroutine (see runner.click).
type callbackAnswer struct {
	h     *callbackHandler
	ctx   requestContext // r's context with its request id
	w     http.ResponseWriter
	c     Click // the click, once decoded
	start time.Time
}

// send is the in-progress answer of a first click whose logic outlasts
// the budget, sent from the budget's timer while the logic goes on on the
// handler's goroutine: the connection is closed after it, since the
// handler returns only when the logic ends.
func (a *callbackAnswer) send(rep reply) {
	a.w.Header()["Connection"] = []string{"close"}
	a.write(rep)
}

// write writes the reply, counts it and logs it.
func (a *callbackAnswer) write(rep reply) {
	h, w := a.h, a.w
	end := time.Now()
	w.Header()["Date"] = h.dates.header(end)
	writeBody(w, http.StatusOK, rep.body)
	h.m.answer.observe(end.Sub(a.start))
	gen := a.c.Generation.String()
	if rep.outcome == OutcomeChallenge {
		gen = "none"
	}
	h.m.callbacks.inc(gen, string(rep.outcome))
	if rep.written != nil {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		rep.written()
	}
	if rep.outcome == OutcomeChallenge {
		logAt(&a.ctx, h.log, end, slog.LevelInfo, "url verification answered")
		return
	}
	logCallback(&a.ctx, h.log, a.c, rep, a.start, end)
}

// serveCallback reads, verifies and acts on the callback r, to be answered
// through a, leaving the click, if it is one, in a.
func serveCallback(r *http.Request, v *verifier, rn *runner, a *callbackAnswer) (reply, error) {
	bp := bodyPool.Get().(*[]byte)
	defer bodyPool.Put(bp)
	body, err := readBodyInto(a.w, r, *bp)
	if err != nil {
		return reply{}, err
	}
	if cap(body) <= 64<<10 {
		*bp = body[:0]
	}
	in := inbounds.Get().(*inbound)
	defer func() { *in = inbound{}; inbounds.Put(in) }()
	k, err := v.open(signedFrom(r.Header), body, in)
	if err != nil {
		return reply{}, err
	}
	if k == kindChallenge {
		return reply{body: challengeAnswer(in.Challenge), outcome: OutcomeChallenge}, nil
	}
	if a.c, err = in.click(k); err != nil {
		return reply{}, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return rn.click(&a.ctx, a.c, a.start, a), nil
}

// inbounds holds decoded callbacks for reuse; what a Click takes from one
// is its own (strings, and slices the decoder allocated).
var inbounds = sync.Pool{New: func() any { return new(inbound) }}

// challengeAnswer is {"challenge":…}, echoing the platform's value.
func challengeAnswer(challenge string) answerBody {
	b := make([]byte, 0, len(`{"challenge":""}`)+len(challenge))
	b = append(b, `{"challenge":"`...)
	b = appendJSONEscaped(b, challenge)
	return answerBody{head: append(b, `"}`...)}
}

func levelOf(o Outcome) slog.Level {
	switch o {
	case OutcomeFailure:
		return slog.LevelError
	case OutcomeUnauthorized:
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// logCallback writes the one line each callback gets: the callback began at
// start and was answered at end.
func logCallback(ctx context.Context, log *slog.Logger, c Click, rep reply, start, end time.Time) {
	attrs := []slog.Attr{
		slog.String("generation", c.Generation.String()),
		slog.String("message_id", c.MessageID),
		slog.String("open_id", c.OpenID),
		slog.String("button_type", c.ButtonType),
		slog.String("outcome", string(rep.outcome)),
		slog.Duration("duration", end.Sub(start)),
	}
	if rep.reason != "" {
		attrs = append(attrs, slog.String("reason", rep.reason))
	}
	logAt(ctx, log, end, levelOf(rep.outcome), "callback", attrs...)
}

package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// benchEnv is a server with no logging, as fast as it is configured.
func benchEnv(b *testing.B, opts ...func(*config)) *testEnv {
	cfg := baseConfig()
	for _, o := range opts {
		o(cfg)
	}
	st := newMemStore()
	log := slog.New(slog.DiscardHandler)
	rn := newRunner(st, func(ctx context.Context, c Click) error { return nil }, log,
		runnerConfig{respondWithin: cfg.respondWithin, logicTimeout: cfg.logicTimeout}, nil)
	return &testEnv{cfg: cfg, store: st, runner: rn, logs: &syncBuffer{},
		handler: newServer(log, cfg, st, rn, nil, rn.metrics), signer: newSigner(cfg.verificationToken, cfg.encryptKey)}
}

// benchRequests builds n signed clicks on messages prefix0…prefixN-1.
func benchRequests(e *testEnv, g Generation, prefix string, n int) []platformRequest {
	reqs := make([]platformRequest, n)
	for i := range reqs {
		reqs[i] = e.request(g, testClick(prefix+strconv.Itoa(i)))
	}
	return reqs
}

// serve sends one prepared request the way net/http would hand it over.
func (e *testEnv) serve(b *testing.B, r platformRequest, want int) {
	req := httptest.NewRequest("POST", e.cfg.path, bytes.NewReader(r.Body))
	req.Header = r.Header
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	if rec.Code != want {
		b.Fatalf("got %d %s", rec.Code, rec.Body)
	}
}

// BenchmarkCallback measures each callback path through the handler, with
// 2 KB cards in the in-memory store. A first click is a new message each
// time; the store is refilled out of the timer when the prepared clicks run
// out.
func BenchmarkCallback(b *testing.B) {
	const pool = 5000
	card := card2K(0)
	for _, tc := range []struct {
		name   string
		gen    Generation
		opts   []func(*config)
		repeat bool
	}{
		{"legacy-first", Legacy, nil, false},
		{"legacy-repeat", Legacy, nil, true},
		{"new-first", New, nil, false},
		{"new-encrypted-first", New, []func(*config){withKey}, false},
		{"new-encrypted-repeat", New, []func(*config){withKey}, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := benchEnv(b, tc.opts...)
			reqs := benchRequests(e, tc.gen, "om_", pool)
			fill := func() {
				done := renderDone(card) // as PUT /cards does
				for i := range pool {
					e.store.Update("om_"+strconv.Itoa(i), func(cur *Record) *Record { return cur.withCard(card, done, nil, time.Now()) })
				}
				if tc.repeat {
					for _, r := range reqs {
						e.serve(b, r, 200)
					}
				}
			}
			fill()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i == pool {
					b.StopTimer()
					if !tc.repeat {
						e.store = newMemStore()
						e.runner.store = e.store
						e.handler = newServer(slog.New(slog.DiscardHandler), e.cfg, e.store, e.runner, nil, e.runner.metrics)
						fill()
					}
					i = 0
					b.StartTimer()
				}
				e.serve(b, reqs[i], 200)
				i++
			}
		})
	}
	b.Run("challenge", func(b *testing.B) {
		e := benchEnv(b)
		r := platformRequest{Body: challengeBody("5634b122-c042-4634-bc7f-b07a3c3e77ad", testToken), Header: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			e.serve(b, r, 200)
		}
	})
}

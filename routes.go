package main

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"
)

// newServer returns the whole HTTP surface of the program.
func newServer(log *slog.Logger, cfg *config, st Store, rn *runner, fc *feishuClient, m *metrics) http.Handler {
	ids := newRequestIDs()
	callback := &callbackHandler{log: log, v: &verifier{signer: newSigner(cfg.verificationToken, cfg.encryptKey), dev: cfg.devMode()}, rn: rn, m: m, ids: ids}
	mux := http.NewServeMux()
	addRoutes(mux, log, cfg, st, fc, m)
	tagged := withRequestID(ids, mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// POST {path}, the route under load, is taken before the mux and
		// tagged without copying the request.
		if r.Method == http.MethodPost && r.URL.Path == cfg.path {
			callback.ServeHTTP(w, r)
			return
		}
		tagged.ServeHTTP(w, r)
	})
}

// addRoutes is every route but POST {path}, the callback, which newServer
// serves ahead of the mux.
func addRoutes(mux *http.ServeMux, log *slog.Logger, cfg *config, st Store, fc *feishuClient, m *metrics) {
	admin := func(h http.Handler) http.Handler { return requireAdmin(log, cfg.adminToken, cfg.adminOpen(), h) }
	// Metrics are open without an admin token, behind it with one.
	metricsAuth := func(h http.Handler) http.Handler { return requireAdmin(log, cfg.adminToken, true, h) }
	now := time.Now

	mux.Handle(cfg.path, methodNotAllowed("POST"))
	mux.Handle("GET /healthz", handleHealth())
	mux.Handle("PUT /cards/{id}", admin(handleCardPut(log, st, now)))
	mux.Handle("GET /cards/{id}", admin(handleCardGet(log, st)))
	mux.Handle("DELETE /cards/{id}", admin(handleCardDelete(log, st)))
	mux.Handle("/cards/{id}", methodNotAllowed("GET, PUT, DELETE"))
	mux.Handle("GET /cards/{id}/clicks", admin(handleClicks(log, st)))
	mux.Handle("POST /messages", admin(handleSendMessage(log, fc, st, now)))
	mux.Handle("GET /metrics", metricsAuth(handleMetrics(m)))
	mux.Handle("GET /debug/vars", metricsAuth(handleVars(m)))
	mux.Handle("GET /debug/pprof/", admin(http.HandlerFunc(pprof.Index)))
	mux.Handle("GET /debug/pprof/profile", admin(http.HandlerFunc(pprof.Profile)))
	mux.Handle("GET /debug/pprof/trace", admin(http.HandlerFunc(pprof.Trace)))
	mux.Handle("/", notFound())
}

func handleHealth() http.Handler {
	body := []byte(`{"status":"ok"}`)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, body)
	})
}

package main

import (
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"
)

// newServer returns the whole HTTP surface of the program.
func newServer(log *slog.Logger, cfg *config, st Store, rn *runner, fc *feishuClient, m *metrics) http.Handler {
	mux := http.NewServeMux()
	addRoutes(mux, log, cfg, st, rn, fc, m)
	return withRequestID(newRequestIDs(), mux)
}

// addRoutes is every route in one place.
func addRoutes(mux *http.ServeMux, log *slog.Logger, cfg *config, st Store, rn *runner, fc *feishuClient, m *metrics) {
	v := &verifier{signer: newSigner(cfg.verificationToken, cfg.encryptKey), dev: cfg.devMode()}
	admin := func(h http.Handler) http.Handler { return requireAdmin(log, cfg.adminToken, cfg.adminOpen(), h) }
	// Metrics are open without an admin token, behind it with one.
	metricsAuth := func(h http.Handler) http.Handler { return requireAdmin(log, cfg.adminToken, true, h) }
	now := time.Now

	mux.Handle("POST "+cfg.path, handleCallback(log, v, rn, m))
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

// Command cardcallback is the server behind a Feishu (Lark) app's card
// request URL. It proves each button click came from the platform, runs the
// business logic of a 完成「全量发布」 click exactly once and only for the
// people allowed to, and answers within the platform's 3-second deadline
// with the updated card, pushing the final card later when the logic takes
// longer.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(context.Background(), os.Args, os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cardcallback:", err)
		os.Exit(1)
	}
}

// run is the whole program; tests call it as a user would.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 1 {
		var sub func(context.Context, []string, func(string) string, io.Writer, io.Writer) error
		switch args[1] {
		case "simulate":
			sub = runSimulate
		case "loadtest":
			sub = runLoadtest
		case "check":
			sub = runCheck
		}
		if sub != nil {
			err := sub(ctx, args[2:], getenv, stdout, stderr)
			if errors.Is(err, flag.ErrHelp) {
				return nil
			}
			return err
		}
	}
	cfg, err := parseConfig(args[1:], getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	sink := newLogSink(stderr)
	log := newLogger(cfg.logFormat, sink)
	defer background(context.Background(), sink.run)()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	st, err := openStore(cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	if getenv("GOGC") == "" {
		defer background(ctx, func(ctx context.Context) { paceGC(ctx, 5*time.Second, liveHeap) })()
	}

	m := newMetrics()
	m.storedRecord = st.Len
	if fs, ok := st.(*fileStore); ok {
		fs.observeSync(m.fsync.observe)
	}
	var fc *feishuClient
	if cfg.hasApp() {
		fc = newFeishuClient(cfg.feishuURL, cfg.appID, cfg.appSecret)
		fc.metrics = m
	}
	rn := newRunner(st, businessLogic(cfg, log), log, runnerConfig{
		allow: cfg.allow, respondWithin: cfg.respondWithin, logicTimeout: cfg.logicTimeout, metrics: m,
	}, pusherOf(fc))
	warnings(cfg, log)

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	// The connections' time limits: 5 s for a request's headers, then
	// the answer's budget and 15 s more for its body and its answer, and
	// 2 minutes between requests. They are enforced by ct, not by
	// http.Server's timeouts (see connTimeouts), so those stay zero.
	ct := newConnTimeouts(5*time.Second, cfg.respondWithin+15*time.Second, 2*time.Minute)
	ct.cut = func(p connPhase) { m.connTimeouts.inc(p.String()) }
	m.openConns = ct.open
	// Sweeping goes on while shutdown drains connections.
	defer background(context.Background(), ct.run)()
	srv := &http.Server{
		Handler:        newServer(log, cfg, st, rn, fc, m),
		ConnState:      ct.connState,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// net/http serves what the fast path hands it, or everything.
	l, drain := ct.listener(ln), func(context.Context) error { return nil }
	if cfg.fastPath {
		fp := newFastPath(l, cfg.path, srv, log)
		fp.handedOff = func(v headVerdict) { m.handoffs.inc(v.String()) }
		go fp.serve()
		l, drain = fp, fp.shutdown
	}
	log.Info("listening", "addr", ln.Addr().String(), "path", cfg.path, "store", storeName(cfg), "fast_path", cfg.fastPath)
	sink.Flush()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: draining requests and running logic", "timeout", cfg.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.shutdownTimeout)
	defer cancel()
	// Both servers drain at once: each stops taking requests at the start.
	drained := make(chan error, 1)
	go func() { drained <- drain(sctx) }()
	errs := []error{srv.Shutdown(sctx), <-drained, rn.shutdown(sctx)}
	if err := errors.Join(errs...); err != nil {
		log.Warn("shutdown was not clean", "err", err)
	}
	log.Info("stopped")
	return nil
}

// background runs loop on its own goroutine until ctx ends or the
// returned stop is called; stop returns once loop has.
func background(ctx context.Context, loop func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { loop(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// businessLogic is where the full release is wired. A Go user replaces
// logOnly here with a Logic of their own.
func businessLogic(cfg *config, log *slog.Logger) Logic {
	if cfg.exec != "" {
		return execLogic(cfg.exec, os.Environ())
	}
	return logOnly(log)
}

// pusherOf avoids a typed nil inside the interface.
func pusherOf(fc *feishuClient) cardPusher {
	if fc == nil {
		return nil
	}
	return fc
}

// warnings says at start what a production deployment lacks.
func warnings(cfg *config, log *slog.Logger) {
	if cfg.devMode() {
		log.Warn("DEVELOPMENT MODE: no FEISHU_VERIFICATION_TOKEN, so no callback is verified; anyone who reaches this server can trigger the logic")
	}
	if cfg.adminToken == "" {
		if cfg.adminOpen() {
			log.Warn("the admin API is open without a token (development mode on loopback); set CARDCALLBACK_ADMIN_TOKEN")
		} else {
			log.Warn("the admin API is disabled until CARDCALLBACK_ADMIN_TOKEN is set")
		}
	}
	if !cfg.hasApp() {
		log.Warn("no app credentials (FEISHU_APP_ID, FEISHU_APP_SECRET): logic that outlasts -respond-within cannot update the card afterwards, and POST /messages is unavailable")
	}
	if cfg.respondWithin >= 3*time.Second {
		log.Warn("-respond-within is at or above the platform's 3 s deadline: users will see error 200341", "respond_within", cfg.respondWithin)
	}
}

func storeName(cfg *config) string {
	if cfg.data == "" {
		return "memory"
	}
	return cfg.data
}

// openStore opens the store the configuration names.
func openStore(cfg *config, log *slog.Logger) (Store, error) {
	if cfg.data == "" {
		return newMemStore(), nil
	}
	return openFileStore(cfg.data, cfg.repair, cfg.retention, log)
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// config is the server's configuration: flags, each with an environment
// variable as its default, so a flag wins over its variable.
type config struct {
	addr              string
	path              string
	verificationToken string
	encryptKey        string
	adminToken        string
	exec              string
	insecure          bool
	logFormat         string
	logicTimeout      time.Duration
	respondWithin     time.Duration
	shutdownTimeout   time.Duration
	allow             []string
	appID             string
	appSecret         string
	feishuURL         string
	data              string
	repair            bool
	retention         time.Duration
	fastPath          bool
}

// devMode is true without a verification token: nothing is verified.
func (c *config) devMode() bool { return c.verificationToken == "" }

// adminOpen is true when the admin API needs no token: development mode on
// a loopback address only, since anyone reaching it could store cards.
func (c *config) adminOpen() bool {
	return c.adminToken == "" && c.devMode() && isLoopback(c.addr)
}

// hasApp is true when app credentials allow calling the Open API.
func (c *config) hasApp() bool { return c.appID != "" && c.appSecret != "" }

// flagSet defines the flags shared by the server and its subcommands,
// their defaults read through getenv.
func (c *config) flagSet(name string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, func() error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var envErrs []error
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	durEnv := func(key string, def time.Duration) time.Duration {
		return parseEnv(getenv, key, def, time.ParseDuration, &envErrs)
	}
	boolEnv := func(key string, def bool) bool {
		return parseEnv(getenv, key, def, func(v string) (bool, error) {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return false, fmt.Errorf("want true or false, got %q", v)
			}
			return b, nil
		}, &envErrs)
	}
	var allow string
	fs.StringVar(&c.addr, "addr", env("CARDCALLBACK_ADDR", "127.0.0.1:8080"), "listen `address` (env CARDCALLBACK_ADDR)")
	fs.StringVar(&c.path, "path", env("CARDCALLBACK_PATH", "/webhook/card"), "callback URL `path` (env CARDCALLBACK_PATH)")
	fs.StringVar(&c.verificationToken, "verification-token", getenv("FEISHU_VERIFICATION_TOKEN"), "the app's Verification Token (env FEISHU_VERIFICATION_TOKEN); empty = development mode")
	fs.StringVar(&c.encryptKey, "encrypt-key", getenv("FEISHU_ENCRYPT_KEY"), "the app's Encrypt Key (env FEISHU_ENCRYPT_KEY)")
	fs.StringVar(&c.adminToken, "admin-token", getenv("CARDCALLBACK_ADMIN_TOKEN"), "bearer token of the admin API (env CARDCALLBACK_ADMIN_TOKEN)")
	fs.StringVar(&c.exec, "exec", getenv("CARDCALLBACK_EXEC"), "shell `command` run for each public_publish click (env CARDCALLBACK_EXEC); empty = log and succeed")
	fs.BoolVar(&c.insecure, "insecure", false, "allow development mode (no verification token) on a non-loopback address")
	fs.StringVar(&c.logFormat, "log-format", env("CARDCALLBACK_LOG_FORMAT", "text"), "log format, text or json (env CARDCALLBACK_LOG_FORMAT)")
	fs.DurationVar(&c.logicTimeout, "logic-timeout", durEnv("CARDCALLBACK_LOGIC_TIMEOUT", 10*time.Minute), "longest run of the business logic (env CARDCALLBACK_LOGIC_TIMEOUT)")
	fs.DurationVar(&c.respondWithin, "respond-within", durEnv("CARDCALLBACK_RESPOND_WITHIN", 2500*time.Millisecond), "answer budget before an in-progress card is sent (env CARDCALLBACK_RESPOND_WITHIN)")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", durEnv("CARDCALLBACK_SHUTDOWN_TIMEOUT", 30*time.Second), "how long shutdown waits for requests and running logic (env CARDCALLBACK_SHUTDOWN_TIMEOUT)")
	fs.StringVar(&allow, "allow", getenv("CARDCALLBACK_ALLOW"), "comma-separated open_ids, user_ids or union_ids allowed to click (env CARDCALLBACK_ALLOW); empty = anyone")
	fs.StringVar(&c.appID, "app-id", getenv("FEISHU_APP_ID"), "the app's App ID (env FEISHU_APP_ID)")
	fs.StringVar(&c.appSecret, "app-secret", getenv("FEISHU_APP_SECRET"), "the app's App Secret (env FEISHU_APP_SECRET)")
	fs.StringVar(&c.feishuURL, "feishu-url", env("FEISHU_BASE_URL", "https://open.feishu.cn"), "Open API base `URL` (env FEISHU_BASE_URL); Lark: https://open.larksuite.com")
	fs.StringVar(&c.data, "data", getenv("CARDCALLBACK_DATA"), "durable store `file` (env CARDCALLBACK_DATA); empty = in memory")
	fs.BoolVar(&c.repair, "repair", false, "start from the longest valid prefix of a damaged data file, moving the file aside")
	fs.DurationVar(&c.retention, "retention", durEnv("CARDCALLBACK_RETENTION", 0), "drop cards and states older than this at compaction (env CARDCALLBACK_RETENTION); 0 = keep")
	fs.BoolVar(&c.fastPath, "fast-path", boolEnv("CARDCALLBACK_FAST_PATH", true), "read callbacks off the connection, handing other requests to net/http (env CARDCALLBACK_FAST_PATH); false = net/http serves everything")
	finish := func() error {
		c.allow = splitList(allow)
		return errors.Join(envErrs...)
	}
	return fs, finish
}

// parseEnv is the environment variable key read with parse, or def when
// it is not set or does not parse; what does not parse is added to errs.
func parseEnv[T any](getenv func(string) string, key string, def T, parse func(string) (T, error), errs *[]error) T {
	v := getenv(key)
	if v == "" {
		return def
	}
	x, err := parse(v)
	if err != nil {
		*errs = append(*errs, fmt.Errorf("%s: %w", key, err))
		return def
	}
	return x
}

// parseConfig reads the server's configuration and checks it.
func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs, finish := c.flagSet("cardcallback", getenv, stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (subcommands: simulate, loadtest, check)", fs.Arg(0))
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return c, c.validate()
}

// reservedPaths are the server's own routes; the callback path must not
// shadow them.
var reservedPaths = []string{"/healthz", "/cards", "/messages", "/metrics", "/debug"}

func (c *config) validate() error {
	if !validPath(c.path) {
		return fmt.Errorf("-path %q: want an absolute URL path such as /webhook/card, made of letters, digits and . _ ~ - /", c.path)
	}
	for _, p := range reservedPaths {
		if c.path == p || strings.HasPrefix(c.path, p+"/") {
			return fmt.Errorf("-path %q is taken by the server's own %s endpoint", c.path, p)
		}
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return fmt.Errorf("-log-format %q: want text or json", c.logFormat)
	}
	for name, d := range map[string]time.Duration{"-logic-timeout": c.logicTimeout, "-respond-within": c.respondWithin, "-shutdown-timeout": c.shutdownTimeout} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive, got %s", name, d)
		}
	}
	if c.retention < 0 {
		return fmt.Errorf("-retention must not be negative, got %s", c.retention)
	}
	if (c.appID == "") != (c.appSecret == "") {
		return errors.New("set both FEISHU_APP_ID and FEISHU_APP_SECRET (or -app-id and -app-secret), or neither")
	}
	if u, err := url.Parse(c.feishuURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("-feishu-url %q: want a URL such as https://open.feishu.cn", c.feishuURL)
	}
	c.feishuURL = strings.TrimRight(c.feishuURL, "/")
	if c.devMode() && !c.insecure && !isLoopback(c.addr) {
		return fmt.Errorf("refusing to listen on %s without FEISHU_VERIFICATION_TOKEN: anyone could trigger the logic; set the token, listen on a loopback address, or pass -insecure", c.addr)
	}
	return nil
}

func validPath(p string) bool {
	if len(p) < 2 || p[0] != '/' {
		return false
	}
	for _, r := range p {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._~-/", r)
		if !ok {
			return false
		}
	}
	return !strings.Contains(p, "//")
}

// isLoopback reports whether addr (host:port) listens on loopback only.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

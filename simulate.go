package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// clientFlags are what the simulator and the load generator add to the
// server's own flags, so that they read the same configuration.
type clientFlags struct {
	cfg     config
	url     string // the callback URL
	admin   string // the admin API's base URL
	gen     string
	appID   string
	timeout time.Duration
}

func (cf *clientFlags) define(name string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, func() error) {
	fs, finish := cf.cfg.flagSet(name, getenv, stderr)
	fs.StringVar(&cf.url, "url", "", "callback `URL` (default: http://<-addr><-path>)")
	fs.StringVar(&cf.admin, "admin-url", "", "admin API base `URL` (default: http://<-addr>)")
	fs.StringVar(&cf.gen, "generation", "legacy", "callback generation: legacy or new")
	fs.DurationVar(&cf.timeout, "timeout", 10*time.Second, "timeout of each request")
	return fs, func() error {
		if err := finish(); err != nil {
			return err
		}
		if cf.gen != "legacy" && cf.gen != "new" {
			return fmt.Errorf("-generation %q: want legacy or new", cf.gen)
		}
		base := "http://" + dialAddr(cf.cfg.addr)
		if cf.url == "" {
			cf.url = base + cf.cfg.path
		}
		if cf.admin == "" {
			cf.admin = base
		}
		cf.admin = strings.TrimRight(cf.admin, "/")
		return nil
	}
}

// dialAddr turns a listen address into one to connect to.
func dialAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

func (cf *clientFlags) generation() Generation {
	if cf.gen == "new" {
		return New
	}
	return Legacy
}

// build makes the request the platform would send for c, or a challenge.
func (cf *clientFlags) build(c Click, challenge bool) platformRequest {
	s := newSigner(cf.cfg.verificationToken, cf.cfg.encryptKey)
	ts, nonce := time.Now().Format(time.RFC1123), randomID(16)
	if challenge {
		return s.seal(Legacy, challengeBody(randomID(16), cf.cfg.verificationToken), sealChallenge, ts, nonce)
	}
	g := cf.generation()
	var plain []byte
	if g == Legacy {
		plain = legacyBody(c)
	} else {
		if c.EventID == "" {
			c.EventID = randomID(16)
		}
		plain = newBody(c, cf.cfg.verificationToken, cf.appID, time.Now())
	}
	return s.seal(g, plain, sealClick, ts, nonce)
}

// runSimulate is `cardcallback simulate`: one click (or challenge) exactly
// as the platform sends it, and the answer.
func runSimulate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var cf clientFlags
	fs, finish := cf.define("cardcallback simulate", getenv, stderr)
	var c Click
	var challenge bool
	var button, buttonID string
	fs.StringVar(&c.MessageID, "message", "om_simulated", "open_message_id of the clicked card")
	fs.StringVar(&c.OpenID, "operator", "ou_simulator", "open_id of who clicks")
	fs.StringVar(&c.UserID, "user-id", "", "user_id of who clicks")
	fs.StringVar(&c.UnionID, "union-id", "", "union_id of who clicks (new generation only)")
	fs.StringVar(&c.ChatID, "chat", "oc_simulated", "open_chat_id")
	fs.StringVar(&c.TenantKey, "tenant", "simulated", "tenant_key")
	fs.StringVar(&c.Token, "update-token", "c-simulated", "the click's card-update token")
	fs.StringVar(&button, "button", PublishButton, "button_type of the clicked button")
	fs.StringVar(&buttonID, "button-id", "1", "button_id of the clicked button")
	fs.StringVar(&cf.appID, "sim-app-id", "cli_simulated", "app_id in a new-generation header")
	fs.BoolVar(&challenge, "challenge", false, "send a URL verification challenge instead of a click")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := finish(); err != nil {
		return err
	}
	c.Tag = "button"
	c.Value, _ = json.Marshal(map[string]string{"button_type": button, "button_id": buttonID})
	req := cf.build(c, challenge)

	hc := &http.Client{Timeout: cf.timeout}
	start := time.Now()
	status, body, err := send(ctx, hc, "POST", cf.url, req)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "POST %s → HTTP %d %s (%s)\n", cf.url, status, http.StatusText(status), time.Since(start).Round(time.Microsecond))
	var pretty bytes.Buffer
	if json.Indent(&pretty, body, "", "  ") == nil {
		body = pretty.Bytes()
	}
	fmt.Fprintf(stdout, "%s\n", body)
	if status != http.StatusOK {
		return fmt.Errorf("the server answered HTTP %d; the platform would show the user an error", status)
	}
	return nil
}

// send sends a prepared request and reads the whole answer.
func send(ctx context.Context, hc *http.Client, method, url string, r platformRequest) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(r.Body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// finding is one line of `cardcallback check`.
type finding struct {
	level string // ok, WARN or FAIL
	msg   string
}

// runCheck is `cardcallback check`: it reads the configuration as the
// server would and reports what is missing or inconsistent for production;
// with -probe it also proves the app credentials against the platform.
// It fails if anything would make production unsafe or broken.
func runCheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c config
	fs, finish := c.flagSet("cardcallback check", getenv, stderr)
	probe := fs.Bool("probe", false, "call the platform's token endpoint to prove the app credentials")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := finish(); err != nil {
		return err
	}
	var out []finding
	add := func(level, format string, a ...any) { out = append(out, finding{level, fmt.Sprintf(format, a...)}) }
	if err := c.validate(); err != nil {
		add("FAIL", "the server would not start: %v", err)
	}
	checkSecrets(&c, add)
	checkStore(&c, add)
	if c.exec != "" {
		checkExec(c.exec, add)
	}
	if *probe {
		checkProbe(ctx, &c, add)
	}

	failed, warned := 0, 0
	for _, f := range out {
		fmt.Fprintf(stdout, "%-4s  %s\n", f.level, f.msg)
		switch f.level {
		case "FAIL":
			failed++
		case "WARN":
			warned++
		}
	}
	if failed > 0 {
		return fmt.Errorf("check failed: %d problem(s), %d warning(s)", failed, warned)
	}
	fmt.Fprintf(stdout, "check passed with %d warning(s)\n", warned)
	return nil
}

func checkSecrets(c *config, add func(string, string, ...any)) {
	if c.devMode() {
		add("FAIL", "no FEISHU_VERIFICATION_TOKEN: nothing is verified (development mode); anyone who reaches the server can run the logic")
	} else {
		add("ok", "callbacks are verified with the Verification Token")
	}
	if c.encryptKey == "" {
		add("WARN", "no FEISHU_ENCRYPT_KEY: new-generation clicks are proven only by a token that travels in clear; set an Encrypt Key in the console and here")
	} else {
		add("ok", "an Encrypt Key decrypts and signs new-generation callbacks")
	}
	switch {
	case c.adminOpen():
		add("FAIL", "the admin API is open without a token (development mode on loopback); set CARDCALLBACK_ADMIN_TOKEN")
	case c.adminToken == "":
		add("WARN", "no CARDCALLBACK_ADMIN_TOKEN: the admin API (cards, POST /messages, pprof) is disabled and /metrics is open")
	case len(c.adminToken) < 16:
		add("WARN", "CARDCALLBACK_ADMIN_TOKEN is shorter than 16 characters: use a long random token")
	default:
		add("ok", "the admin API and /metrics need the admin token")
	}
	if !c.hasApp() {
		add("WARN", "no app credentials (FEISHU_APP_ID, FEISHU_APP_SECRET): logic that outlasts -respond-within (%s) leaves the user an in-progress card until they click again, and POST /messages is unavailable", c.respondWithin)
	} else {
		add("ok", "app credentials are set for delayed updates and POST /messages (-probe proves them)")
	}
	if c.respondWithin >= 3*time.Second {
		add("FAIL", "-respond-within %s is not under the platform's 3 s deadline: slow clicks will show error 200341", c.respondWithin)
	} else if c.respondWithin > 2800*time.Millisecond {
		add("WARN", "-respond-within %s leaves under 200 ms for the network before the 3 s deadline", c.respondWithin)
	}
	if !isLoopback(c.addr) {
		add("ok", "listening on %s: put a reverse proxy that terminates TLS in front (deploy/)", c.addr)
	}
}

func checkStore(c *config, add func(string, string, ...any)) {
	if c.data == "" {
		add("WARN", "no -data: the store is in memory, so a restart forgets every card and done click, and a released card could release again")
		return
	}
	dir := filepath.Dir(c.data)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		add("FAIL", "the data file's folder %s does not exist", dir)
		return
	}
	lock, err := os.OpenFile(c.data+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		add("FAIL", "cannot create %s.lock: %v (the server needs to write in %s)", c.data, err, dir)
		return
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		add("FAIL", "the data file %s cannot be locked: %v (another cardcallback uses it; a running server holds it)", c.data, err)
		return
	}
	syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	add("ok", "the data file %s can be locked and written", c.data)
	if c.retention == 0 {
		add("WARN", "no -retention: the data file keeps every card forever")
	}
}

func checkExec(command string, add func(string, string, ...any)) {
	fields := strings.Fields(command)
	if len(fields) == 0 {
		add("FAIL", "-exec is blank")
		return
	}
	if _, err := exec.LookPath(fields[0]); err != nil && !isShellBuiltin(fields[0]) {
		add("FAIL", "-exec %q: %s is not an executable the server can find: %v", command, fields[0], err)
		return
	}
	add("ok", "-exec runs %q for each publish click", command)
}

func isShellBuiltin(word string) bool {
	switch word {
	case "echo", "exit", "true", "false", "test", "[", ":", "cd", "exec", "printf", "set", "export":
		return true
	}
	return false
}

func checkProbe(ctx context.Context, c *config, add func(string, string, ...any)) {
	if !c.hasApp() {
		add("FAIL", "-probe needs FEISHU_APP_ID and FEISHU_APP_SECRET")
		return
	}
	fc := newFeishuClient(c.feishuURL, c.appID, c.appSecret)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := fc.tenantToken(ctx, ""); err != nil {
		var ae *apiError
		if errors.As(err, &ae) && ae.Code != 0 {
			add("FAIL", "the platform refused the app credentials: code %d: %s (check FEISHU_APP_ID and FEISHU_APP_SECRET, and -feishu-url for Lark)", ae.Code, ae.Msg)
		} else {
			add("FAIL", "cannot reach %s for a tenant_access_token: %v", c.feishuURL, err)
		}
		return
	}
	add("ok", "the platform at %s issued a tenant_access_token for %s", c.feishuURL, c.appID)
}

package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	f := newFakeFeishu(t)
	dir := t.TempDir()
	prod := map[string]string{
		"FEISHU_VERIFICATION_TOKEN": testToken, "FEISHU_ENCRYPT_KEY": testKey, "CARDCALLBACK_ADMIN_TOKEN": testAdmin,
		"FEISHU_APP_ID": fakeAppID, "FEISHU_APP_SECRET": fakeAppSecret, "FEISHU_BASE_URL": f.srv.URL,
		"CARDCALLBACK_DATA": filepath.Join(dir, "cards.db"), "CARDCALLBACK_RETENTION": "720h",
	}
	with := func(kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range prod {
			env[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	locked, _ := openTestStore(t, filepath.Join(dir, "busy.db"), false)
	defer locked.Close()

	for _, tc := range []struct {
		name  string
		args  []string
		env   map[string]string
		pass  bool
		wants []string
	}{
		{"production", []string{"-probe"}, prod, true, []string{"check passed with 0 warning(s)", "issued a tenant_access_token"}},
		{"development defaults", nil, map[string]string{}, false, []string{"FAIL  no FEISHU_VERIFICATION_TOKEN", "FAIL  the admin API is open", "WARN  no -data"}},
		{"wrong app secret", []string{"-probe"}, with("FEISHU_APP_SECRET", "wrong"), false, []string{"refused the app credentials: code 10014"}},
		{"probe without credentials", []string{"-probe"}, with("FEISHU_APP_ID", "", "FEISHU_APP_SECRET", ""), false, []string{"-probe needs"}},
		{"data file in use", nil, with("CARDCALLBACK_DATA", filepath.Join(dir, "busy.db")), false, []string{"cannot be locked"}},
		{"data folder missing", nil, with("CARDCALLBACK_DATA", filepath.Join(dir, "nope", "cards.db")), false, []string{"does not exist"}},
		{"budget past the deadline", []string{"-respond-within", "3s"}, prod, false, []string{"200341"}},
		{"no app credentials", nil, with("FEISHU_APP_ID", "", "FEISHU_APP_SECRET", ""), true, []string{"WARN  no app credentials", "in-progress card"}},
		{"exec not found", []string{"-exec", "/nonexistent/release --now"}, prod, false, []string{"not an executable"}},
		{"exec found", []string{"-exec", "sh ./release.sh"}, prod, true, []string{`-exec runs "sh ./release.sh"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), append([]string{"cardcallback", "check"}, tc.args...),
				func(k string) string { return tc.env[k] }, strings.NewReader(""), &out, io.Discard)
			if (err == nil) != tc.pass {
				t.Errorf("passed: %v (%v), want %v\n%s", err == nil, err, tc.pass, &out)
			}
			for _, want := range tc.wants {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, &out)
				}
			}
			if strings.Contains(out.String(), fakeAppSecret) || strings.Contains(out.String(), testToken) {
				t.Errorf("a secret in the output:\n%s", &out)
			}
		})
	}
}

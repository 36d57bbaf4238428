package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestRunUsage(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		wantStdout string
		wantStderr string
	}{
		{"no command", nil, 2, "", "usage: smtpkit"},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"help", []string{"help"}, 0, "usage: smtpkit", ""},
		{"--help", []string{"--help"}, 0, "usage: smtpkit", ""},
		{"serve -h", []string{"serve", "-h"}, 0, "", "-listen address"},
		{"serve bad flag", []string{"serve", "--bogus"}, 2, "", "flag provided but not defined: -bogus"},
		{"serve bad int", []string{"serve", "--max-size", "ten"}, 2, "", "invalid value"},
		{"serve stray argument", []string{"serve", "--data", data, "extra"}, 2, "", `unexpected argument "extra"`},
		{"serve bad log level", []string{"serve", "--data", data, "--log-level", "loud"}, 2, "", "loud"},
		// Configuration errors found by the daemon exit 1, with the cause.
		{"serve tls-listen without cert", []string{"serve", "--data", data, "--tls-listen", "127.0.0.1:0"}, 1, "", "--tls-listen needs --tls-cert"},
		{"serve missing users", []string{"serve", "--data", data, "--users", filepath.Join(data, "nope")}, 1, "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, strings.NewReader(""), &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstderr: %s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tc.wantStdout)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.wantStderr)
			}
			if tc.wantStdout == "" && stdout.Len() > 0 {
				t.Errorf("unexpected stdout %q", stdout.String())
			}
		})
	}
}

func TestHash(t *testing.T) {
	// bcrypt at its default cost is slow under the race detector: few
	// cases, in parallel.
	for _, tc := range []struct{ name, stdin, password string }{
		{"newline", "correct horse\n", "correct horse"},
		{"CRLF, UTF-8, spaces kept", "  pässwörd ✓ \r\n", "  pässwörd ✓ "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			if code := run([]string{"hash"}, strings.NewReader(tc.stdin), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			out := stdout.String()
			if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
				t.Errorf("output %q, want one line", out)
			}
			h := strings.TrimSuffix(out, "\n")
			if err := bcrypt.CompareHashAndPassword([]byte(h), []byte(tc.password)); err != nil {
				t.Errorf("hash %q does not match %q: %v", h, tc.password, err)
			}
			if c, err := bcrypt.Cost([]byte(h)); err != nil || c != bcrypt.DefaultCost {
				t.Errorf("cost %d (%v), want %d", c, err, bcrypt.DefaultCost)
			}
		})
	}
	for _, tc := range []struct {
		name, stdin string
		code        int
		wantStderr  string
	}{
		{"empty", "", 2, "empty password"},
		{"only newline", "\n", 2, "empty password"},
		{"too long for bcrypt", strings.Repeat("x", 73) + "\n", 1, "smtpkit hash:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run([]string{"hash"}, strings.NewReader(tc.stdin), &stdout, &stderr); code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if stdout.Len() > 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr %q, want %q", stderr.String(), tc.wantStderr)
			}
		})
	}
}

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMsmtpStartTLSAuth(t *testing.T) {
	t.Parallel()
	bin := tool(t, "msmtp")
	d := startDaemon(t, daemonOptions{StartTLS: true, Users: true})
	host, port := hostPort(t, d.SMTP)
	dir := t.TempDir()
	logFile := filepath.Join(dir, "msmtp.log")
	rc := fmt.Sprintf(`defaults
logfile %s

account e2e
host %s
port %s
domain client.example
from a@example.com
auth plain
user %s
password "%s"
tls on
tls_starttls on
tls_certcheck off
`, logFile, host, port, testUser, testPassword)
	rcFile := filepath.Join(dir, "msmtprc")
	if err := os.WriteFile(rcFile, []byte(rc), 0o600); err != nil { // msmtp wants 0600 for a password
		t.Fatal(err)
	}
	// msmtp adds From, Date and Message-ID when they are missing; the test
	// message has them all, so msmtp sends it unchanged.
	msg := testMessage("msmtp")
	r := runPeer(t, msg, bin, "-C", rcFile, "-a", "e2e", "-v", "b@example.com")
	if r.Code != 0 {
		t.Fatalf("msmtp exited %d", r.Code)
	}
	for _, want := range []string{"--> STARTTLS", "<-- 235 2.7.0 ", "<-- 250 2.0.0 OK"} {
		if !strings.Contains(r.Output(), want) {
			t.Errorf("msmtp's transcript lacks %q", want)
		}
	}
	if log := string(readFile(t, logFile)); !strings.Contains(log, "exitcode=EX_OK") {
		t.Errorf("msmtp log: %s", log)
	}
	files := d.waitMessages(1)
	d.check(files[0], msg, `^Received: from client\.example \(\[127\.0\.0\.1\]\)`, ` with ESMTPSA id `,
		`\(version=TLS 1\.[23] cipher=\w+\)`, `\tfor <b@example\.com>; `)
}

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// exim returns the Exim binary scripts/test.sh unpacked (SMTPKIT_EXIM), or
// one on the PATH.
func exim(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SMTPKIT_EXIM"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return tool(t, "exim4", "exim")
}

// TestEximBDAT sends through Exim, the one client here that speaks RFC
// 3030 CHUNKING: its SMTP transport uses BDAT when the server offers it.
// The body holds what DATA would have to escape (a lone ".", leading dots)
// and is large enough for several chunks; it must land byte for byte.
func TestEximBDAT(t *testing.T) {
	t.Parallel()
	bin := exim(t)
	eximUser, err := user.Lookup("Debian-exim") // the user Debian's Exim is built to run as
	if err != nil {
		t.Skipf("no Debian-exim user (scripts/test.sh makes it): %v", err)
	}
	uid, _ := strconv.Atoi(eximUser.Uid)
	gid, _ := strconv.Atoi(eximUser.Gid)
	d := startDaemon(t, daemonOptions{})
	_, port := hostPort(t, d.SMTP)

	// Exim's delivery process runs as its own user and must reach its
	// spool: the directories are made traversable and handed to it.
	dir := t.TempDir()
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{"spool", "log"} {
		p := filepath.Join(dir, sub)
		if err := os.Mkdir(p, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "exim.conf")
	writeConf := fmt.Sprintf(`exim_path = %s
keep_environment =
primary_hostname = client.example
spool_directory = %s
log_file_path = %s/%%slog
trusted_users = root
begin routers
all:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = remote
  self = send
begin transports
remote:
  driver = smtp
  port = %s
  hosts_try_chunking = *
  hosts_avoid_tls = *
begin retry
* * F,1h,1h
`, bin, filepath.Join(dir, "spool"), filepath.Join(dir, "log"), port)
	if err := os.WriteFile(conf, []byte(writeConf), 0o644); err != nil {
		t.Fatal(err)
	}

	var body bytes.Buffer
	body.WriteString("first line\r\n.\r\n..two dots\r\n.leading dot\r\n")
	for i := range 6000 { // about 300 KB
		fmt.Fprintf(&body, "line %05d of a message long enough to need more than one chunk\r\n", i)
	}
	body.WriteString(".\r\nlast line\r\n")
	msg := append([]byte("Subject: exim bdat\r\n\r\n"), body.Bytes()...)

	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	// -odf: deliver in the foreground; -oi: a lone "." is not the end.
	cmd := exec.CommandContext(ctx, bin, "-C", conf, "-odf", "-oi", "-f", "a@client.example", "b@example.org")
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	mainlog, _ := os.ReadFile(filepath.Join(dir, "log", "mainlog"))
	if err != nil {
		t.Fatalf("exim: %v\n%s\nmainlog:\n%s", err, out, mainlog)
	}
	// Exim's log marks a delivery that used CHUNKING with K.
	if !regexp.MustCompile(`=> b@example\.org .* K C="250 2\.0\.0 OK: queued as `).Match(mainlog) {
		t.Fatalf("exim did not deliver with CHUNKING (no K), or not with our 250:\n%s", mainlog)
	}

	got := readFile(t, d.waitMessages(1)[0])
	hdr, rest, ok := bytes.Cut(got, []byte("\r\n\r\n"))
	if !ok || !bytes.Equal(rest, body.Bytes()) {
		t.Fatalf("the body differs from what was given to Exim (%d bytes stored after the header, want %d)", len(rest), body.Len())
	}
	if !strings.Contains(string(hdr), "\r\nSubject: exim bdat") || !receivedRE.Match(hdr) {
		t.Errorf("header:\n%s", hdr)
	}
}

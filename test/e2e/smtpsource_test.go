package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// smtpSourceBody is the payload smtp-source -l n sends: n bytes of 'X' in
// 80-byte CRLF-ended lines whose first byte is a digit, plus the CRLF that
// ends the last line (postfix/src/smtpstone/smtp-source.c).
func smtpSourceBody(n int) []byte {
	b := bytes.Repeat([]byte{'X'}, n)
	for i := 80; i < n; i += 80 {
		b[i-80] = "0123456789"[(i/80)%10]
		b[i-2], b[i-1] = '\r', '\n'
	}
	return append(b, '\r', '\n')
}

// smtpSourceHeaderRE matches the header smtp-source writes before the
// payload: From, To, Date, Message-Id, then an empty line. (Its
// message counter can print as ffffffff: it goes below zero when the last
// sessions start.)
var smtpSourceHeaderRE = regexp.MustCompile(`^From: <a@example\.com>\r\nTo: <b@example\.com>\r\nDate: [^\r\n]+\r\nMessage-Id: <[0-9a-f]{4,8}\.[0-9a-f]{4,8}\.[0-9a-f]{4,8}@client\.example>\r\n\r\n`)

// checkSmtpSource checks one message smtp-source sent with -l size and
// returns its Received header.
func checkSmtpSource(t *testing.T, d *daemon, path string, size int, recv ...string) string {
	t.Helper()
	b := readFile(t, path)
	loc := receivedRE.FindIndex(b)
	if loc == nil {
		t.Fatalf("%s has no Received header", filepath.Base(path))
	}
	h := smtpSourceHeaderRE.Find(b[loc[1]:])
	if h == nil {
		t.Fatalf("%s: not smtp-source's header:\n%q", filepath.Base(path), head(b[loc[1]:], 300))
	}
	return d.check(path, append(h, smtpSourceBody(size)...), recv...)
}

func smtpSource(t *testing.T, addr string, args ...string) {
	t.Helper()
	bin := tool(t, "/usr/sbin/smtp-source", "smtp-source")
	args = append([]string{"-M", "client.example", "-f", "a@example.com", "-t", "b@example.com"}, args...)
	r := runPeer(t, nil, bin, append(args, addr)...)
	if r.Code != 0 {
		t.Fatalf("smtp-source exited %d", r.Code)
	}
}

func TestSmtpSourceConcurrent(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{})
	const n, size = 200, 1024
	// 16 sessions at once, a new connection for each message.
	smtpSource(t, d.SMTP, "-s", "16", "-m", strconv.Itoa(n), "-l", strconv.Itoa(size))
	files := d.waitMessages(n)
	for _, f := range files {
		checkSmtpSource(t, d, f, size, ` with SMTP id `, `\tfor <b@example\.com>; `)
		if t.Failed() {
			break
		}
	}
	d.waitLogCount(`msg=session .*messages=1 .*outcome=quit`, n)
}

func TestSmtpSourceReuse(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{})
	const n, size = 200, 3000
	// -d: several messages per connection; -r 2: two recipients each.
	smtpSource(t, d.SMTP, "-d", "-s", "8", "-m", strconv.Itoa(n), "-l", strconv.Itoa(size), "-r", "2")
	files := d.waitMessages(n)
	for _, f := range files {
		hdr := checkSmtpSource(t, d, f, size, ` with SMTP id `)
		if strings.Contains(hdr, "\tfor <") {
			t.Errorf("Received names one of two recipients:\n%s", hdr)
		}
		if t.Failed() {
			break
		}
	}
	// 8 connections, each used until the 200 messages are out.
	sessions := d.waitLogCount(`msg=session `, 8)
	total := 0
	for _, s := range sessions {
		m := regexp.MustCompile(` messages=(\d+) `).FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("session line without a message count: %s", s)
		}
		k, _ := strconv.Atoi(m[1])
		total += k
	}
	if total != n {
		t.Errorf("sessions logged %d messages, want %d", total, n)
	}
}

func TestSmtpSourceLMTP(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{LMTP: true})
	const n, size = 50, 500
	// -L: LMTP, which reads one reply per recipient after DATA.
	smtpSource(t, d.LMTP, "-L", "-d", "-s", "4", "-m", strconv.Itoa(n), "-l", strconv.Itoa(size), "-r", "3")
	files := d.waitMessages(n)
	for _, f := range files {
		checkSmtpSource(t, d, f, size, ` with LMTP id `)
		if t.Failed() {
			break
		}
	}
}

func TestSmtpSourceDiscard(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{Args: []string{"--discard"}})
	smtpSource(t, d.SMTP, "-s", "16", "-m", "200", "-l", "1024")
	d.waitLogCount(`msg=session .*messages=1 .*outcome=quit`, 200)
	d.noMessages()
	if _, err := os.Stat(filepath.Join(d.Data, "maildir")); !os.IsNotExist(err) {
		t.Errorf("--discard created a maildir (stat: %v)", err)
	}
	if code := d.stop(); code != 0 {
		t.Errorf("smtpkit exited %d after SIGTERM", code)
	}
}

package e2e

import (
	"strings"
	"testing"
)

// TestSwaksProxyProtocol runs the daemon behind a "load balancer" on
// loopback: swaks sends the PROXY header a balancer would, and the client
// address in it is the one the relay rule, the limits and the trace header
// see.
func TestSwaksProxyProtocol(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{Args: []string{"--proxy-from", "127.0.0.0/8"}})
	proxy := func(version, family, src string) []string {
		return []string{"--proxy-version", version, "--proxy-family", family,
			"--proxy-source", src, "--proxy-source-port", "40000", "--proxy-dest", "127.0.0.1", "--proxy-dest-port", "25"}
	}

	// v1 (text) header naming another loopback client: mail is taken, and
	// the trace header names the client, not the balancer.
	msg := testMessage("swaks-proxy-v1")
	args := append(proxy("1", "TCP4", "127.0.0.9"), "--from", "a@example.com", "--to", "b@example.com",
		"--data", "@"+writeFile(t, "msg.eml", msg))
	r := swaks(t, d.SMTP, args...)
	if r.Code != 0 {
		t.Fatalf("swaks with a v1 header exited %d:\n%s", r.Code, r.Output())
	}
	files := d.waitMessages(1)
	d.check(files[0], swaksSent(t, r.Stdout), `^Received: from client\.example \(\[127\.0\.0\.9\]\)`)

	// v2 (binary) header naming an outside client: no relaying for it
	// without AUTH, although the balancer itself is on loopback.
	args = append(proxy("2", "AF_INET", "192.0.2.7"), "--from", "a@example.com", "--to", "b@example.com")
	r = swaks(t, d.SMTP, args...)
	if r.Code == 0 || !strings.Contains(r.Stdout, "<** 530 5.7.0") {
		t.Fatalf("swaks with a v2 header from 192.0.2.7 exited %d, want a 530 5.7.0 to MAIL:\n%s", r.Code, r.Output())
	}

	// No header from a trusted address: no greeting (the connection is
	// closed when the header is overdue, after 10 s), so nobody can pass
	// for the balancer's own address.
	r = swaks(t, d.SMTP, "--from", "a@example.com", "--to", "b@example.com")
	if r.Code == 0 || strings.Contains(r.Stdout, "<-  220 ") {
		t.Fatalf("swaks without a header exited %d and was greeted:\n%s", r.Code, r.Output())
	}
	if got := len(listDir(t, d.Maildir())); got != 1 {
		t.Errorf("%d messages in the Maildir, want 1", got)
	}
}

package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/internal/dnstest"
	"github.com/smtpkit/smtpkit/queue"
)

// TestRelayDelayWarning: a message the MX keeps deferring gets the sender
// one "delayed" notice (RFC 3464 Action: delayed) once --delay-warning has
// passed, and stays queued for more attempts; the notice is not repeated.
func TestRelayDelayWarning(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2", "127.0.0.3")
	const later = "451 4.3.2 e2e: try again later"
	sk := startSink(t, joinPort("127.0.0.2", port), "-r", "RCPT", "-b", later)
	mx := startMX(t, "127.0.0.3", port, false)
	dns := dnstest.New(t, append(senderZone("127.0.0.3"), "slow.test. MX 10 mx.slow.test.", "mx.slow.test. A 127.0.0.2")...)
	r := startRelay(t, "", "", relayArgs(dns.Addr, port, "--delay-warning", "1s")...)
	msg := testMessage("relay-delay")
	start := time.Now()
	id := mustQueue(t, r.SMTP, sender, []string{"b@slow.test"}, msg)

	notice := waitMail(t, mx, 1)[0]
	if el := time.Since(start); el < time.Second {
		t.Errorf("delay notice after %v, before the 1s --delay-warning", el)
	}
	_, raw := stripReceived(t, readFile(t, notice), 1)
	rep := parseDSN(t, raw)
	if got := rep.Header.Get("To"); got != "<"+sender+">" {
		t.Errorf("notice To: %q, want <%s>", got, sender)
	}
	if got := rep.Header.Get("Subject"); !strings.Contains(got, "Delayed") {
		t.Errorf("notice Subject: %q, want a delay, not a failure", got)
	}
	if got := rep.finalRecipients(); len(got) != 1 || got[0] != "b@slow.test" {
		t.Fatalf("notice reports %v, want [b@slow.test]", got)
	}
	h := rep.Recipients[0]
	if a := h.Get("Action"); a != "delayed" {
		t.Errorf("Action %q, want delayed", a)
	}
	if s := h.Get("Status"); s != "4.3.2" {
		t.Errorf("Status %q, want 4.3.2 from the MX's last reply", s)
	}
	if d := h.Get("Diagnostic-Code"); !strings.HasPrefix(d, "smtp; "+later) {
		t.Errorf("Diagnostic-Code %q, want the MX's reply %q", d, later)
	}
	if u := h.Get("Will-Retry-Until"); u == "" {
		t.Errorf("no Will-Retry-Until (RFC 3464 2.3.9) in the delay notice")
	} else if until, err := time.Parse(time.RFC1123Z, u); err != nil || until.Before(start.Add(24*time.Hour)) {
		t.Errorf("Will-Retry-Until %q (%v), want the end of the default 5-day lifetime", u, err)
	}

	// Still queued and retried after the notice, and no second notice.
	n := sk.commands("RCPT TO:<b@slow.test>")
	waitQueue(t, r.Data, "more attempts after the notice", relayTimeout, func(msgs []*queue.Message) bool {
		m := findMessage(msgs, id)
		return m != nil && m.Recipients[0].Status == queue.Pending && sk.commands("RCPT TO:<b@slow.test>") >= n+2
	})
	if files := listDir(t, mx.Maildir()); len(files) != 1 {
		t.Errorf("%d messages for the sender, want exactly one delay notice", len(files))
	}
}

package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/internal/dnstest"
	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/smtp"
)

// These tests run "smtpkit serve --relay" between real peers: a client
// (the client package) hands the relay a message, the relay looks its
// recipients' domains up in a dnstest server and delivers to receiving
// smtpkit daemons and Postfix's smtp-sink on 127.0.0.2 and up, all on one
// port, which the relay is told with --mx-port.

// senderZone is the DNS of the sender's domain, whose MX is the receiving
// daemon at senderIP: where bounces land.
func senderZone(senderIP string) []string {
	return []string{"sender.test. MX 10 mx.sender.test.", "mx.sender.test. A " + senderIP}
}

const sender = "a@sender.test"

// checkRelayed asserts that a delivered file is the receiver's Received
// header, the relay's, and then exactly msg; recv are regular expressions
// the receiver's header must match.
func checkRelayed(t testing.TB, path string, msg []byte, recv ...string) {
	t.Helper()
	h, body := stripReceived(t, readFile(t, path), 2)
	if !bytes.Equal(body, msg) {
		t.Errorf("%s: relayed message differs from what the client sent:\n got: %q\nwant: %q", path, head(body, 300), head(msg, 300))
	}
	// The relay says it took the message from our client; the receiver
	// that it took it from the relay (which says EHLO with --hostname).
	if !regexp.MustCompile(`^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n\tby mx\.test with ESMTP id `).MatchString(h[1]) {
		t.Errorf("relay's Received header:\n%s", h[1])
	}
	recv = append(recv, `^Received: from mx\.test \(`)
	for _, re := range recv {
		if !regexp.MustCompile(re).MatchString(h[0]) {
			t.Errorf("receiver's Received header does not match %q:\n%s", re, h[0])
		}
	}
}

// checkBounce parses a bounce delivered to the sender and checks it
// reports exactly the recipients in want, as failed with a status
// matching status, and returning msg (behind the relay's Received header)
// as message/rfc822.
func checkBounce(t testing.TB, path string, msg []byte, status string, want ...string) *dsnReport {
	t.Helper()
	_, raw := stripReceived(t, readFile(t, path), 1) // the receiver's
	r := parseDSN(t, raw)
	if got := r.Header.Get("To"); got != "<"+sender+">" {
		t.Errorf("bounce To: %q, want <%s>", got, sender)
	}
	if got := r.Header.Get("From"); !strings.Contains(got, "MAILER-DAEMON@mx.test") {
		t.Errorf("bounce From: %q", got)
	}
	if got := r.Header.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("bounce Auto-Submitted: %q, want auto-replied (RFC 3834)", got)
	}
	if got := r.PerMessage.Get("Reporting-MTA"); got != "dns; mx.test" {
		t.Errorf("Reporting-MTA: %q", got)
	}
	if got := r.finalRecipients(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("bounce reports %v, want %v", got, want)
	}
	for _, h := range r.Recipients {
		if a := h.Get("Action"); a != "failed" {
			t.Errorf("%s: Action %q, want failed", h.Get("Final-Recipient"), a)
		}
		if s := h.Get("Status"); !regexp.MustCompile(`^(` + status + `)$`).MatchString(s) {
			t.Errorf("%s: Status %q, want %s", h.Get("Final-Recipient"), s, status)
		}
	}
	if r.OriginalType != "message/rfc822" {
		t.Fatalf("bounce returns the original as %q, want message/rfc822", r.OriginalType)
	}
	// The original as the relay queued it: its own Received header, then
	// the client's message, byte for byte (RFC 2046 5.1.1: the CRLF before
	// the boundary belongs to the boundary).
	_, orig := stripReceived(t, r.Original, 1)
	if !bytes.Equal(orig, msg) {
		t.Errorf("returned original differs from the message sent:\n got: %q\nwant: %q", head(orig, 300), head(msg, 300))
	}
	return r
}

// TestRelayBestMX: with two MX hosts up, the one with the lower
// preference gets the message (RFC 5321 5.1).
func TestRelayBestMX(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2", "127.0.0.3")
	mx1 := startMX(t, "127.0.0.2", port, false)
	mx2 := startMX(t, "127.0.0.3", port, false)
	dns := dnstest.New(t, append(senderZone("127.0.0.3"),
		"best.test. MX 20 mx2.best.test.", "best.test. MX 10 mx1.best.test.",
		"mx1.best.test. A 127.0.0.2", "mx2.best.test. A 127.0.0.3")...)
	r := startRelay(t, "", "", relayArgs(dns.Addr, port)...)

	for i := range 3 {
		msg := testMessage(fmt.Sprintf("relay-best-mx-%d", i))
		id := mustQueue(t, r.SMTP, sender, []string{"b@best.test"}, msg)
		files := waitMail(t, mx1, i+1)
		checkRelayed(t, mailWith(t, files, "relay-best-mx-"+fmt.Sprint(i))[0], msg)
		r.waitLog(`msg=delivered id=` + id + ` rcpt=b@best.test mta=mx1.best.test attempt=1`)
	}
	waitQueueEmpty(t, r.Data)
	mx2.noMessages()
}

// TestRelayMXFallback: when the best MX refuses connections or answers
// 4xx to MAIL or RCPT, the next one gets the message in the same attempt
// (RFC 5321 5.1).
func TestRelayMXFallback(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2", "127.0.0.4", "127.0.0.5", "127.0.0.6")
	good := startMX(t, "127.0.0.2", port, false)
	const later = "451 4.3.2 e2e: try again later"
	rcptSink := startSink(t, joinPort("127.0.0.5", port), "-r", "RCPT", "-b", later)
	mailSink := startSink(t, joinPort("127.0.0.6", port), "-r", "MAIL", "-b", later)
	zone := senderZone("127.0.0.2")
	for dom, ip := range map[string]string{"refused.test": "127.0.0.4", "rcpt4.test": "127.0.0.5", "mail4.test": "127.0.0.6"} {
		zone = append(zone, dom+". MX 10 mx1."+dom+".", dom+". MX 20 mx2."+dom+".",
			"mx1."+dom+". A "+ip, "mx2."+dom+". A 127.0.0.2")
	}
	dns := dnstest.New(t, zone...)
	r := startRelay(t, "", "", relayArgs(dns.Addr, port)...)

	for n, tc := range []struct {
		name, domain string
		tried        func() bool // the first MX saw the message
	}{
		{"ConnectionRefused", "refused.test", func() bool { return true }},
		{"RCPT4xx", "rcpt4.test", func() bool { return rcptSink.commands("RCPT TO:<b@rcpt4.test>") > 0 }},
		{"MAIL4xx", "mail4.test", func() bool { return mailSink.commands("MAIL FROM:<"+sender+">") > 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := "relay-fallback-" + tc.domain
			msg := testMessage(tag)
			id := mustQueue(t, r.SMTP, sender, []string{"b@" + tc.domain}, msg)
			files := waitMail(t, good, n+1)
			checkRelayed(t, mailWith(t, files, tag)[0], msg)
			r.waitLog(`msg=delivered id=` + id + ` rcpt=b@` + regexp.QuoteMeta(tc.domain) + ` mta=mx2\.` + regexp.QuoteMeta(tc.domain) + ` attempt=1`)
			// The sink's transcript comes through a pipe: give it a moment.
			for deadline := time.Now().Add(10 * time.Second); !tc.tried(); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Errorf("the preferred MX of %s was not tried", tc.domain)
					break
				}
			}
		})
	}
	waitQueueEmpty(t, r.Data)
	if n := rcptSink.commands("DATA") + mailSink.commands("DATA"); n != 0 {
		t.Errorf("the refusing sinks saw DATA %d times", n)
	}
}

// TestRelayImplicitMX: a domain with an address but no MX is its own MX
// (RFC 5321 5.1).
func TestRelayImplicitMX(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2")
	mx := startMX(t, "127.0.0.2", port, false)
	dns := dnstest.New(t, append(senderZone("127.0.0.2"), "implicit.test. A 127.0.0.2")...)
	r := startRelay(t, "", "", relayArgs(dns.Addr, port)...)
	msg := testMessage("relay-implicit-mx")
	id := mustQueue(t, r.SMTP, sender, []string{"b@implicit.test"}, msg)
	checkRelayed(t, waitMail(t, mx, 1)[0], msg)
	r.waitLog(`msg=delivered id=` + id + ` rcpt=b@implicit.test mta=implicit.test attempt=1`)
	waitQueueEmpty(t, r.Data)
}

// TestRelayNullMX: a domain whose only MX is "." takes no mail
// (RFC 7505): the sender gets a bounce with 5.1.10 and nothing is tried.
func TestRelayNullMX(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2")
	mx := startMX(t, "127.0.0.2", port, false)
	dns := dnstest.New(t, append(senderZone("127.0.0.2"), "nullmx.test. MX 0 .", "nullmx.test. A 127.0.0.2")...)
	r := startRelay(t, "", "", relayArgs(dns.Addr, port)...)
	msg := testMessage("relay-null-mx")
	mustQueue(t, r.SMTP, sender, []string{"b@nullmx.test"}, msg)
	waitQueueEmpty(t, r.Data)
	files := waitMail(t, mx, 1)
	rep := checkBounce(t, files[0], msg, `5\.1\.10`, "b@nullmx.test")
	if d := rep.Recipients[0].Get("Diagnostic-Code"); !strings.Contains(d, "556 5.1.10") {
		t.Errorf("Diagnostic-Code %q, want the 556 5.1.10 of RFC 7505", d)
	}
	if len(r.logLines(`msg=delivered .*rcpt=b@nullmx\.test`)) > 0 {
		t.Error("a null-MX domain got the message")
	}
}

// TestRelayRetryAfter4xx: an MX that answers 4xx leaves the message
// deferred with that reply; once a working MX takes its place, "smtpkit
// queue retry" delivers it without waiting for the (long) backoff.
func TestRelayRetryAfter4xx(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2")
	const later = "451 4.3.2 e2e: try again later"
	sk := startSink(t, joinPort("127.0.0.2", port), "-r", "RCPT", "-b", later)
	dns := dnstest.New(t, append(senderZone("127.0.0.2"), "retry.test. MX 10 mx.retry.test.", "mx.retry.test. A 127.0.0.2")...)
	// Backoff of an hour: only "queue retry" can bring the second attempt.
	r := startRelay(t, "", "", relayArgs(dns.Addr, port, "--retry-min", "1h", "--retry-max", "2h")...)
	msg := testMessage("relay-retry")
	id := mustQueue(t, r.SMTP, sender, []string{"b@retry.test"}, msg)

	msgs := waitQueue(t, r.Data, "deferred with the 4xx", relayTimeout, func(msgs []*queue.Message) bool {
		m := findMessage(msgs, id)
		return m != nil && m.Recipients[0].Attempts >= 1
	})
	rc := findMessage(msgs, id).Recipients[0]
	if rc.Status != queue.Pending || rc.Attempts != 1 || !strings.Contains(rc.LastReply, later) || rc.RemoteMTA != "mx.retry.test" {
		t.Fatalf("after the 4xx: status %v, attempts %d, last reply %q from %q; want pending, 1, %q from mx.retry.test",
			rc.Status, rc.Attempts, rc.LastReply, rc.RemoteMTA, later)
	}
	if time.Until(rc.NextAttempt) < 30*time.Minute {
		t.Fatalf("next attempt at %v, want about an hour from now", rc.NextAttempt)
	}

	sk.stop()
	mx := startMX(t, "127.0.0.2", port, false)
	if out := queueCLI(t, r.Data, "retry", id); out.Code != 0 || !strings.Contains(out.Stdout, "retry: 1 message(s)") {
		t.Fatalf("queue retry %s: exit %d, %q", id, out.Code, out.Output())
	}
	checkRelayed(t, waitMail(t, mx, 1)[0], msg)
	r.waitLog(`msg=delivered id=` + id + ` rcpt=b@retry.test mta=mx.retry.test attempt=2`)
	waitQueueEmpty(t, r.Data)
}

// TestRelayPartialBounce: one recipient of three gets a 5xx; the others
// get the message byte for byte, and the sender exactly one bounce, a
// multipart/report naming only the failed recipient (RFC 3464, 6522).
func TestRelayPartialBounce(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2", "127.0.0.3")
	const refusal = "550 5.1.1 e2e: no such user"
	startSink(t, joinPort("127.0.0.2", port), "-f", "RCPT", "-B", refusal)
	mx := startMX(t, "127.0.0.3", port, false)
	dns := dnstest.New(t, append(senderZone("127.0.0.3"),
		"fail.test. MX 10 mx.fail.test.", "mx.fail.test. A 127.0.0.2",
		"ok.test. MX 10 mx.ok.test.", "mx.ok.test. A 127.0.0.3")...)
	r := startRelay(t, "", "", relayArgs(dns.Addr, port)...)
	msg := testMessage("relay-partial")
	mustQueue(t, r.SMTP, sender, []string{"b@ok.test", "x@fail.test", "c@ok.test"}, msg)

	waitQueueEmpty(t, r.Data) // so the bounce, queued before, is delivered too
	files := waitMail(t, mx, 2)
	bounces := mailWith(t, files, "multipart/report")
	if len(bounces) != 1 {
		t.Fatalf("%d of the 2 messages are bounces, want 1", len(bounces))
	}
	for _, f := range files {
		if f != bounces[0] {
			checkRelayed(t, f, msg)
		}
	}
	rep := checkBounce(t, bounces[0], msg, `5\.1\.1`, "x@fail.test")
	h := rep.Recipients[0]
	if d := h.Get("Diagnostic-Code"); !strings.HasPrefix(d, "smtp; "+refusal) {
		t.Errorf("Diagnostic-Code %q, want the MX's reply %q", d, refusal)
	}
	if m := h.Get("Remote-MTA"); m != "dns; mx.fail.test" {
		t.Errorf("Remote-MTA %q, want dns; mx.fail.test", m)
	}
	if !strings.Contains(rep.Text, "<x@fail.test>: "+refusal) || strings.Contains(rep.Text, "ok.test") {
		t.Errorf("human-readable part:\n%s", rep.Text)
	}
}

// TestRelayExpiry: a message that only ever gets 4xx bounces once
// --queue-lifetime has passed, with status 5.4.7 (RFC 3463: delivery
// time expired) and the last reply as the diagnostic.
func TestRelayExpiry(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2", "127.0.0.3")
	const later = "451 4.3.2 e2e: try again later"
	sk := startSink(t, joinPort("127.0.0.2", port), "-r", "RCPT", "-b", later)
	mx := startMX(t, "127.0.0.3", port, false)
	dns := dnstest.New(t, append(senderZone("127.0.0.3"), "slow.test. MX 10 mx.slow.test.", "mx.slow.test. A 127.0.0.2")...)
	r := startRelay(t, "", "", relayArgs(dns.Addr, port, "--queue-lifetime", "2s")...)
	msg := testMessage("relay-expiry")
	start := time.Now()
	mustQueue(t, r.SMTP, sender, []string{"b@slow.test"}, msg)

	waitQueueEmpty(t, r.Data)
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("bounced after %v, before the 2s lifetime", el)
	}
	rep := checkBounce(t, waitMail(t, mx, 1)[0], msg, `5\.4\.7`, "b@slow.test")
	if d := rep.Recipients[0].Get("Diagnostic-Code"); !strings.Contains(d, "expired") || !strings.Contains(d, later) {
		t.Errorf("Diagnostic-Code %q, want the expiry and the last reply %q", d, later)
	}
	if n := sk.commands("RCPT TO:<b@slow.test>"); n < 2 {
		t.Errorf("the MX saw %d attempts, want retries before expiry", n)
	}
}

// TestRelaySTARTTLS: the relay encrypts opportunistically to an MX with a
// self-signed certificate; under an enforced MTA-STS policy (RFC 8461) it
// requires a certificate valid for the MX name, deferring (never sending
// in plaintext) when it is not, and delivering when it is.
func TestRelaySTARTTLS(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2", "127.0.0.3")
	selfSigned := startMX(t, "127.0.0.2", port, true) // the harness's certificate: not for mx.sts.test
	ca := newCA(t)
	_, mxCert, mxKey := ca.issue(t, "mx.good-sts.test")
	valid := startMX(t, "127.0.0.3", port, false, "--tls-cert", mxCert, "--tls-key", mxKey)

	// The policy host: HTTPS on 127.0.0.4 with a certificate from our CA.
	var fetches atomic.Int32
	stsCert, _, _ := ca.issue(t, "mta-sts.sts.test", "mta-sts.good-sts.test")
	l, err := net.Listen("tcp", joinPort("127.0.0.4", mxPort(t, "127.0.0.4")))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		host, _, _ := strings.Cut(req.Host, ":")
		dom, ok := strings.CutPrefix(host, "mta-sts.")
		if !ok || req.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, req)
			return
		}
		fetches.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "version: STSv1\r\nmode: enforce\r\nmx: mx.%s\r\nmax_age: 86400\r\n", dom)
	}))
	srv.Listener.Close()
	srv.Listener = l
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{stsCert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, stsPort := hostPort(t, l.Addr().String())

	dns := dnstest.New(t, append(senderZone("127.0.0.2"),
		"tls.test. MX 10 mx.tls.test.", "mx.tls.test. A 127.0.0.2",
		"sts.test. MX 10 mx.sts.test.", "mx.sts.test. A 127.0.0.2",
		`_mta-sts.sts.test. TXT "v=STSv1; id=1"`, "mta-sts.sts.test. A 127.0.0.4",
		"good-sts.test. MX 10 mx.good-sts.test.", "mx.good-sts.test. A 127.0.0.3",
		`_mta-sts.good-sts.test. TXT "v=STSv1; id=20260101"`, "mta-sts.good-sts.test. A 127.0.0.4")...)
	r := startRelay(t, "", "", relayArgs(dns.Addr, port, "--relay-ca", ca.File, "--mta-sts-port", stsPort)...)

	t.Run("Opportunistic", func(t *testing.T) {
		msg := testMessage("relay-tls-opportunistic")
		mustQueue(t, r.SMTP, sender, []string{"b@tls.test"}, msg)
		checkRelayed(t, waitMail(t, selfSigned, 1)[0], msg, ` with ESMTPS id `)
	})
	t.Run("MTASTSValid", func(t *testing.T) {
		msg := testMessage("relay-tls-sts-valid")
		mustQueue(t, r.SMTP, sender, []string{"b@good-sts.test"}, msg)
		checkRelayed(t, waitMail(t, valid, 1)[0], msg, ` with ESMTPS id `)
	})
	t.Run("MTASTSInvalidCert", func(t *testing.T) {
		before := fetches.Load()
		msg := testMessage("relay-tls-sts-invalid")
		id := mustQueue(t, r.SMTP, sender, []string{"b@sts.test"}, msg)
		msgs := waitQueue(t, r.Data, "deferred twice", relayTimeout, func(msgs []*queue.Message) bool {
			m := findMessage(msgs, id)
			return m != nil && m.Recipients[0].Attempts >= 2
		})
		rc := findMessage(msgs, id).Recipients[0]
		t.Logf("deferred: %s", rc.LastReply)
		if rc.Status != queue.Pending || !strings.Contains(rc.LastReply, "4.7.5") || !strings.Contains(rc.LastReply, "TLS") {
			t.Errorf("status %v, last reply %q; want pending with a 4.7.5 TLS failure", rc.Status, rc.LastReply)
		}
		if fetches.Load() <= before {
			t.Errorf("the MTA-STS policy of sts.test was never fetched")
		}
		// Still only the opportunistic message: nothing went in plaintext.
		if files := listDir(t, selfSigned.Maildir()); len(files) != 1 {
			t.Errorf("the MX of sts.test has %d messages, want 1 (the opportunistic one)", len(files))
		}
	})
}

// TestRelaySmarthost: --relay smtp://user:pass@host:port sends everything
// through one server with STARTTLS and AUTH; wrong credentials keep the
// message queued (4.7.8) instead of bouncing it.
func TestRelaySmarthost(t *testing.T) {
	t.Parallel()
	// The harness's certificate is for 127.0.0.1, so the smarthost is there.
	up := startDaemon(t, daemonOptions{ImplicitTLS: true, Users: true})
	target := func(scheme, addr, pass string) string {
		return (&url.URL{Scheme: scheme, User: url.UserPassword(testUser, pass), Host: addr}).String()
	}
	args := func(target string) []string {
		return []string{"--relay", target, "--relay-ca", certFile, "--retry-min", "200ms", "--retry-max", "1s"}
	}
	if u := target("smtp", up.SMTP, testPassword); !strings.Contains(u, ":hunter2%20c0rrect-horse@") {
		t.Fatalf("the password is not URL-escaped in %q", u)
	}

	for n, tc := range []struct{ name, scheme, addr string }{
		{"STARTTLS", "smtp", up.SMTP},
		{"ImplicitTLS", "smtps", up.SMTPS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRelay(t, "", "", args(target(tc.scheme, tc.addr, testPassword))...)
			tag := "relay-smarthost-" + tc.scheme
			msg := testMessage(tag)
			id := mustQueue(t, r.SMTP, sender, []string{"b@anywhere.test"}, msg)
			checkRelayed(t, mailWith(t, waitMail(t, up, n+1), tag)[0], msg, ` with ESMTPSA id `)
			r.waitLog(`msg=delivered id=` + id + ` rcpt=b@anywhere.test mta=127.0.0.1 attempt=1`)
			waitQueueEmpty(t, r.Data)
		})
	}
	t.Run("WrongPassword", func(t *testing.T) {
		r := startRelay(t, "", "", args(target("smtp", up.SMTP, "not-"+testPassword))...)
		id := mustQueue(t, r.SMTP, sender, []string{"b@anywhere.test"}, testMessage("relay-smarthost-badauth"))
		msgs := waitQueue(t, r.Data, "deferred twice", relayTimeout, func(msgs []*queue.Message) bool {
			m := findMessage(msgs, id)
			return m != nil && m.Recipients[0].Attempts >= 2
		})
		rc := findMessage(msgs, id).Recipients[0]
		t.Logf("deferred: %s", rc.LastReply)
		if rc.Status != queue.Pending || !strings.HasPrefix(rc.LastReply, "451 4.7.8 ") {
			t.Errorf("status %v, last reply %q; want pending with 451 4.7.8", rc.Status, rc.LastReply)
		}
		if l := r.logLines(`msg=(bounced|expired|"dsn queued")`); len(l) > 0 {
			t.Errorf("wrong credentials bounced the message: %q", l)
		}
		if files := listDir(t, up.Maildir()); len(files) != 2 {
			t.Errorf("the smarthost has %d messages, want only the 2 of the tests before", len(files))
		}
	})
}

// TestRelayQueueStopped: the queue command works on a stopped server's
// spool: list, show, bounce (sent once the server is back) and delete.
func TestRelayQueueStopped(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2", "127.0.0.3")
	const later = "451 4.3.2 e2e: try again later"
	startSink(t, joinPort("127.0.0.2", port), "-r", "RCPT", "-b", later)
	mx := startMX(t, "127.0.0.3", port, false)
	dns := dnstest.New(t, append(senderZone("127.0.0.3"), "hold.test. MX 10 mx.hold.test.", "mx.hold.test. A 127.0.0.2")...)
	args := relayArgs(dns.Addr, port, "--retry-min", "1h", "--retry-max", "2h")
	r := startRelay(t, "", "", args...)
	msgA, msgB := testMessage("relay-hold-a"), testMessage("relay-hold-b")
	idA := mustQueue(t, r.SMTP, sender, []string{"a@hold.test"}, msgA)
	idB := mustQueue(t, r.SMTP, sender, []string{"b@hold.test"}, msgB)
	waitQueue(t, r.Data, "both deferred", relayTimeout, func(msgs []*queue.Message) bool {
		a, b := findMessage(msgs, idA), findMessage(msgs, idB)
		return a != nil && b != nil && a.Recipients[0].Attempts == 1 && b.Recipients[0].Attempts == 1
	})
	if code := r.stop(); code != 0 {
		t.Fatalf("relay exited %d on SIGTERM", code)
	}

	out := queueCLI(t, r.Data, "list")
	for _, want := range []string{idA, idB, "2 message(s)", "ID  ", "LAST REPLY", sender, "1/1"} {
		if out.Code != 0 || !strings.Contains(out.Stdout, want) {
			t.Errorf("queue list: exit %d, no %q in:\n%s", out.Code, want, out.Output())
		}
	}
	out = queueCLI(t, r.Data, "show", idA)
	for _, want := range []string{"id:       " + idA, "from:     " + sender, "a@hold.test  pending  attempts=1",
		"last: " + later + " (from mx.hold.test)", "Subject: e2e relay-hold-a", "client:   client.example [127.0.0.1]"} {
		if out.Code != 0 || !strings.Contains(out.Stdout, want) {
			t.Errorf("queue show: exit %d, no %q in:\n%s", out.Code, want, out.Output())
		}
	}
	if out := queueCLI(t, r.Data, "bounce", idA); out.Code != 0 || out.Stdout != "bounce: 1 message(s)\n" {
		t.Errorf("queue bounce: exit %d, %q", out.Code, out.Output())
	}
	if out := queueCLI(t, r.Data, "delete", idB); out.Code != 0 || out.Stdout != "delete: 1 message(s)\n" {
		t.Errorf("queue delete: exit %d, %q", out.Code, out.Output())
	}
	msgs := queueJSON(t, r.Data, "list").Messages
	if len(msgs) != 1 || msgs[0].ID != idA || msgs[0].Recipients[0].Status != queue.Failed {
		t.Fatalf("after bounce and delete the queue holds %d messages, want %s failed", len(msgs), idA)
	}
	if out := queueCLI(t, r.Data, "show", idB); out.Code == 0 {
		t.Errorf("queue show of the deleted message succeeded:\n%s", out.Output())
	}

	r2 := startRelay(t, r.Data, "", args...)
	waitQueueEmpty(t, r2.Data)
	files := waitMail(t, mx, 1)
	rep := checkBounce(t, files[0], msgA, `5\.0\.0`, "a@hold.test")
	if d := rep.Recipients[0].Get("Diagnostic-Code"); !strings.Contains(d, "Returned to sender by the administrator") || !strings.Contains(d, later) {
		t.Errorf("Diagnostic-Code %q", d)
	}
	if l := r2.logLines(idB); len(l) > 0 {
		t.Errorf("the restarted relay still knows the deleted message: %q", l)
	}
}

// hopMessage is a message that has already crossed hops servers.
func hopMessage(tag string, hops int) []byte {
	var b bytes.Buffer
	for i := hops; i > 0; i-- {
		fmt.Fprintf(&b, "Received: from h%d.example by h%d.example; Thu, 01 Jan 2026 00:00:%02d +0000\r\n", i, i+1, i%60)
	}
	b.Write(testMessage(tag))
	return b.Bytes()
}

// TestRelayLoop: a message with 51 Received fields is refused at the end
// of DATA with 554 5.4.6 (RFC 5321 6.3, Postfix's hopcount_limit of 50);
// one with 50 passes.
func TestRelayLoop(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2")
	mx := startMX(t, "127.0.0.2", port, false)
	dns := dnstest.New(t, append(senderZone("127.0.0.2"), "loop.test. MX 10 mx.loop.test.", "mx.loop.test. A 127.0.0.2")...)
	r := startRelay(t, "", "", relayArgs(dns.Addr, port)...)

	ok := hopMessage("relay-hops-50", 50)
	mustQueue(t, r.SMTP, sender, []string{"b@loop.test"}, ok)

	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	res, err := sendMail(ctx, r.SMTP, mustAddr(t, sender), []smtp.Address{mustAddr(t, "b@loop.test")}, hopMessage("relay-hops-51", 51))
	if err != nil {
		t.Fatal(err)
	}
	if res.Reply.Code != 554 || res.Reply.EnhancedCode != (smtp.EnhancedCode{5, 4, 6}) || res.Rcpt[0] == nil {
		t.Errorf("51 hops: final reply %d %v %q, want 554 5.4.6", res.Reply.Code, res.Reply.EnhancedCode, res.Reply.Text())
	}

	waitQueueEmpty(t, r.Data)
	files := waitMail(t, mx, 1)
	_, body := stripReceived(t, readFile(t, files[0]), 2)
	if !bytes.Equal(body, ok) {
		t.Errorf("the 50-hop message arrived changed")
	}
}

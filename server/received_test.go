package server

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

func TestReceivedHeader(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		mode   mode
		server func(*Server)
		script string // from the greeting up to a message
		with   string
	}{
		{"HELO", modePlain, nil, "C: HELO client.test\nS: 250\nC: MAIL FROM:<a@example.com>\nS: 250", "SMTP"},
		{"EHLO", modePlain, nil, "C: EHLO client.test\nS: 250\nC: MAIL FROM:<a@example.com>\nS: 250", "ESMTP"},
		{"STARTTLS", modeStartTLS, nil, "C: EHLO client.test\nS: 250\nC: MAIL FROM:<a@example.com>\nS: 250", "ESMTPS"},
		{"implicit TLS", modeTLS, nil, "C: EHLO client.test\nS: 250\nC: MAIL FROM:<a@example.com>\nS: 250", "ESMTPS"},
		{"AUTH", modePlain, func(s *Server) { s.AllowInsecureAuth = true },
			"C: EHLO client.test\nS: 250\nC: AUTH PLAIN AHVzZXIAc2VjcmV0\nS: 235\nC: MAIL FROM:<a@example.com>\nS: 250", "ESMTPA"},
		{"TLS and AUTH", modeTLS, nil,
			"C: EHLO client.test\nS: 250\nC: AUTH PLAIN AHVzZXIAc2VjcmV0\nS: 235\nC: MAIL FROM:<a@example.com>\nS: 250", "ESMTPSA"},
		{"SMTPUTF8", modePlain, nil, "C: EHLO client.test\nS: 250\nC: MAIL FROM:<a@example.com> SMTPUTF8\nS: 250", "UTF8SMTP"},
		{"SMTPUTF8 and TLS", modeTLS, nil, "C: EHLO client.test\nS: 250\nC: MAIL FROM:<a@example.com> SMTPUTF8\nS: 250", "UTF8SMTPS"},
		{"LMTP", modeLMTP, nil, "C: LHLO client.test\nS: 250\nC: MAIL FROM:<a@example.com>\nS: 250", "LMTP"},
		{"LMTP and SMTPUTF8", modeLMTP, nil, "C: LHLO client.test\nS: 250\nC: MAIL FROM:<a@example.com> SMTPUTF8\nS: 250", "UTF8LMTP"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t)
			b.auth = true
			srv := &Server{Handler: b}
			if tc.server != nil {
				tc.server(srv)
			}
			h := serve(t, tc.mode, srv)
			c := h.dial()
			c.run(tc.script + `
				C: RCPT TO:<b@example.com>
				S: 250
				C: DATA
				S: 354
				C: .
				S: 250
			`)
			msgs := b.Messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages", len(msgs))
			}
			r := msgs[0].received
			if !strings.HasPrefix(r, "Received: from client.test ([127.0.0.1])\r\n\tby mx.test with "+tc.with+" id ") {
				t.Errorf("Received header:\n%s", r)
			}
			if tls := strings.Contains(r, "(version=TLS"); tls != (tc.mode == modeTLS || tc.mode == modeStartTLS) {
				t.Errorf("TLS comment present: %v in\n%s", tls, r)
			}
			if !strings.Contains(r, "\r\n\tfor <b@example.com>;") {
				t.Errorf("no for clause for the one recipient:\n%s", r)
			}
			checkHeaderLines(t, r)
		})
	}
}

// checkHeaderLines fails unless h is one header field: a first line
// "Received:" and continuation lines only.
func checkHeaderLines(t *testing.T, h string) {
	t.Helper()
	if !strings.HasSuffix(h, "\r\n") {
		t.Errorf("header does not end in CRLF: %q", h)
	}
	for i, line := range strings.Split(strings.TrimSuffix(h, "\r\n"), "\r\n") {
		if i == 0 && !strings.HasPrefix(line, "Received: ") || i > 0 && !strings.HasPrefix(line, "\t") {
			t.Errorf("line %d starts a new field: %q", i, line)
		}
		if strings.ContainsAny(line, "\r\n\v\x00") {
			t.Errorf("line %d holds a control character: %q", i, line)
		}
	}
}

func TestReceivedHeaderInjection(t *testing.T) {
	t.Parallel()
	// Over the wire: CR and NUL cannot reach a HELO name; what can is cleaned.
	b := newBackend(t)
	c := serve(t, modePlain, &Server{Handler: b}).dial()
	c.run(`
		W: HELO evil\r\nX-Injected: yes\r\n
		S: 250 mx.test
		S: 500
		W: HELO evil\x0bX-Injected:\x0cyes\tnow
		W: \r\n
		S: 250 mx.test
		C: MAIL FROM:<a@example.com>
		S: 250
		C: RCPT TO:<b@example.com>
		S: 250
		C: DATA
		S: 354
		C: .
		S: 250
	`)
	r := b.Messages()[0].received
	checkHeaderLines(t, r)
	if !strings.HasPrefix(r, "Received: from evilX-Injected:yesnow ([127.0.0.1])") {
		t.Errorf("HELO name not cleaned:\n%s", r)
	}

	// Directly, with the characters the wire refuses.
	conn := &Conn{helo: "a\r\nX-Injected: yes (x) <y>;", esmtp: true, RemoteAddr: &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 25}, ID: "id\r\n1"}
	r = conn.Received(nil, []smtp.Address{{Local: "b\r\nX: y", Domain: "example.com"}}).String()
	checkHeaderLines(t, r)
	for _, bad := range []string{"(x)", "<y>", "yes;"} {
		if strings.Contains(r, bad) {
			t.Errorf("%q survived in\n%s", bad, r)
		}
	}

	// Two recipients: no "for", so that no Bcc recipient is disclosed.
	r = conn.Received(nil, []smtp.Address{{Local: "b", Domain: "example.com"}, {Local: "c", Domain: "example.com"}}).String()
	if strings.Contains(r, "for ") {
		t.Errorf("Received names a recipient of two:\n%s", r)
	}
}

func TestConnProtocol(t *testing.T) {
	t.Parallel()
	cases := []struct {
		lmtp, esmtp, tls, auth, utf8 bool
		want                         string
	}{
		{false, false, false, false, false, "SMTP"},
		{false, false, true, false, true, "SMTP"},
		{false, true, false, false, false, "ESMTP"},
		{false, true, true, false, false, "ESMTPS"},
		{false, true, false, true, false, "ESMTPA"},
		{false, true, true, true, false, "ESMTPSA"},
		{false, true, false, false, true, "UTF8SMTP"},
		{false, true, true, false, true, "UTF8SMTPS"},
		{false, true, false, true, true, "UTF8SMTPA"},
		{false, true, true, true, true, "UTF8SMTPSA"},
		{true, true, false, false, false, "LMTP"},
		{true, true, true, false, false, "LMTPS"},
		{true, true, false, true, false, "LMTPA"},
		{true, true, true, true, false, "LMTPSA"},
		{true, true, false, false, true, "UTF8LMTP"},
		{true, true, true, true, true, "UTF8LMTPSA"},
	}
	for _, tc := range cases {
		c := &Conn{lmtp: tc.lmtp, esmtp: tc.esmtp}
		if tc.tls {
			c.tls = &tls.ConnectionState{}
		}
		if tc.auth {
			c.identity = "user"
		}
		equal(t, "Protocol", c.Protocol(tc.utf8), tc.want)
	}
}

package server

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestSTARTTLS(t *testing.T) {
	t.Parallel()
	srvTLS, _ := testTLS()
	withTLS := func(s *Server) { s.TLSConfig = srvTLS }
	runScripts(t, []scriptCase{{
		name:  "state is reset by the handshake",
		modes: []mode{modeStartTLS},
		script: `
			C: MAIL FROM:<a@example.com>
			S: 503 Say HELO/EHLO first
			C: NOOP
			S: 250 OK
			C: EHLO client.test
			S: 250-mx.test greets client.test
			C: STARTTLS
			S: 503 5.5.1 TLS already active
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equalSlices(t, "events", b.Events(), []string{"connect", "hello client.test", "hello client.test", "mail <a@example.com>"})
			msgs := b.Messages()
			equal(t, "messages", len(msgs), 0)
		},
	}, {
		name:   "STARTTLS with an argument",
		modes:  []mode{modePlain},
		server: withTLS,
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: STARTTLS now
			S: 501 5.5.4
		`,
	}, {
		name:   "STARTTLS inside a transaction",
		modes:  []mode{modePlain},
		server: withTLS,
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: STARTTLS
			S: 503 5.5.1 STARTTLS not allowed now
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
		`,
	}, {
		name:    "STARTTLS after AUTH",
		modes:   []mode{modePlain},
		server:  func(s *Server) { s.TLSConfig = srvTLS; s.AllowInsecureAuth = true },
		backend: func(b *backend) { b.auth = true },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 235 2.7.0
			C: STARTTLS
			S: 503 5.5.1
		`,
	}})
}

// Plaintext pipelined behind STARTTLS must be thrown away, never executed
// inside the TLS session (CVE-2011-0411).
func TestSTARTTLSInjection(t *testing.T) {
	t.Parallel()
	payloads := []string{
		"NOOP\r\n",
		"MAIL FROM:<evil@example.com>\r\n",
		"RSET\r\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n",
		"EHLO evil.example\r\nAUTH PLAIN AHVzZXIAc2VjcmV0\r\n",
	}
	for _, p := range payloads {
		t.Run(strings.Fields(p)[0], func(t *testing.T) {
			t.Parallel()
			srvTLS, _ := testTLS()
			b := newBackend(t)
			b.auth = true
			c := serve(t, modePlain, &Server{Handler: b, TLSConfig: srvTLS}).dial()
			c.run(`
				C: EHLO client.test
				S: 250-mx.test
			`)
			c.write("STARTTLS\r\n" + p)
			c.expect("220 2.0.0 Ready to start TLS")
			c.handshake()
			// Had the injected commands run, their replies would come first.
			c.run(`
				C: EHLO client.test
				S: 250-mx.test greets client.test
				C: RCPT TO:<b@example.com>
				S: 503 5.5.1 Need MAIL before RCPT
				C: MAIL FROM:<a@example.com>
				S: 250 2.1.0
				C: QUIT
				S: 221
				S: EOF
			`)
			for _, ev := range b.Events() {
				if strings.Contains(ev, "evil") || strings.Contains(ev, "auth") {
					t.Errorf("injected command ran: %s", ev)
				}
			}
		})
	}
}

func TestSTARTTLSFailedHandshake(t *testing.T) {
	t.Parallel()
	srvTLS, _ := testTLS()
	b := newBackend(t)
	h := serve(t, modePlain, &Server{Handler: b, TLSConfig: srvTLS})
	c := h.dial()
	c.run(`
		C: EHLO client.test
		S: 250-mx.test
		C: STARTTLS
		S: 220 2.0.0
		W: this is not a TLS record\r\n
	`)
	// The server may send an alert before it closes.
	c.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.Copy(io.Discard, c.nc); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading to the end: %v", err)
	}
	if err := b.waitClose(); err == nil {
		t.Error("Close got nil for a failed handshake")
	}
	h.checkServes()
}

package server

import (
	"context"
	"io"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

func TestBDAT(t *testing.T) {
	t.Parallel()
	bodies := func(want ...string) func(t *testing.T, m mode, b *backend) {
		return func(t *testing.T, m mode, b *backend) {
			var got []string
			for _, msg := range b.Messages() {
				got = append(got, msg.body)
			}
			equalSlices(t, "bodies", got, want)
		}
	}
	runScripts(t, []scriptCase{{
		name:  "chunks, one at a time",
		modes: allModes,
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 7
			W: Hello,\x20
			S: 250 2.0.0 7 octets received
			C: BDAT 8
			W: world!\r\n
			S: 250 2.0.0 8 octets received
			C: BDAT 0 LAST
			S: 250 2.0.0 OK: queued as
			C: QUIT
			S: 221
			S: EOF
		`,
		check: bodies("Hello, world!\r\n"),
	}, {
		name:  "pipelined chunks",
		modes: allModes,
		script: `
			C: EHLO client.test
			C: MAIL FROM:<a@example.com>
			C: RCPT TO:<b@example.com>
			C: BDAT 3
			W: abc
			C: BDAT 12
			W: \r\n.\r\nx\ny\rz\r\n
			C: bdat 2 last
			W: ok
			S: 250-mx.test
			S: 250 2.1.0
			S: 250 2.1.5
			S: 250 2.0.0 3 octets received
			S: 250 2.0.0 12 octets received
			S: 250 2.0.0 OK: queued as
			C: MAIL FROM:<a@example.com>
			C: RCPT TO:<b@example.com>
			C: BDAT 0 LAST
			S: 250 2.1.0
			S: 250 2.1.5
			S: 250 2.0.0 OK: queued as
		`,
		check: bodies("abc\r\n.\r\nx\ny\rz\r\nok", ""),
	}, {
		name: "BDAT outside a transaction smuggles nothing",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: BDAT 37
			W: RSET\r\nMAIL FROM:<x@y.example>\r\nNOOP\r\n
			S: 503 5.5.1 Need MAIL command
			C: RCPT TO:<b@example.com>
			S: 503 5.5.1 Need MAIL before RCPT
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: BDAT 37 LAST
			W: RSET\r\nMAIL FROM:<x@y.example>\r\nNOOP\r\n
			S: 503 5.5.1 Need RCPT command
			C: QUIT
			S: 221
			S: EOF
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equalSlices(t, "events", b.sessionEvents(m), []string{"hello client.test", "mail <a@example.com>", "close"})
		},
	}, {
		name:   "size limit across chunks",
		modes:  allModes,
		server: func(s *Server) { s.MaxMessageBytes = 10 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 6
			W: abcdef
			S: 250 2.0.0 6 octets received
			C: BDAT 6 LAST
			W: ghijkl
			S: 552 5.3.4 Message size exceeds fixed limit
			# Pipelined chunks after the failure are consumed and refused.
			C: MAIL FROM:<a@example.com>
			C: RCPT TO:<b@example.com>
			C: BDAT 20
			W: 01234567890123456789
			C: BDAT 4 LAST
			W: RSET
			S: 250 2.1.0
			S: 250 2.1.5
			S: 552 5.3.4
			S: 503 5.5.1
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 10 LAST
			W: 0123456789
			S: 250 2.0.0 OK
		`,
		check: bodies("0123456789"),
	}, {
		name:  "RSET between chunks aborts",
		modes: allModes,
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 5
			W: hello
			S: 250 2.0.0 5 octets received
			C: RSET
			S: 250 2.0.0 OK
			C: BDAT 5 LAST
			W: world
			S: 503 5.5.1
			C: QUIT
			S: 221
			S: EOF
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equal(t, "messages", len(b.Messages()), 0)
			equalSlices(t, "events", b.sessionEvents(m), []string{"hello client.test", "mail <a@example.com>", "rcpt <b@example.com>", "data", "reset", "close"})
		},
	}, {
		name: "other commands between chunks",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 5
			W: hello
			S: 250 2.0.0 5 octets received
			C: NOOP
			S: 250 2.0.0 OK
			C: BDAT 5 LAST
			W: world
			S: 503 5.5.1
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 1
			W: x
			S: 250 2.0.0 1 octets received
			C: DATA
			S: 503 5.5.1
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 1
			W: x
			S: 250 2.0.0 1 octets received
			C: NOOP ` + "\xff" + `
			S: 500 5.5.2
			C: QUIT
			S: 221
			S: EOF
		`,
		check: bodies(),
	}, {
		name: "malformed BDAT closes the connection",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: BDAT 1O
			W: RSET\r\n
			S: 501 5.5.4 Syntax: BDAT size [LAST]
			S: EOF
		`,
	}, {
		name: "BDAT with a junk keyword closes the connection",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 12 FIRST
			W: MAIL FROM:<>
			S: 501 5.5.4
			S: EOF
		`,
		check: func(t *testing.T, m mode, b *backend) {
			b.waitClose()
			equalSlices(t, "events", b.sessionEvents(m), []string{"hello client.test", "mail <a@example.com>", "rcpt <b@example.com>", "close error"})
		},
	}, {
		name: "oversized BDAT closes the connection",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 99999999999999 LAST
			W: RSET\r\n
			S: 501 5.5.4
			S: EOF
		`,
	}, {
		name: "malformed BDAT between chunks closes the connection",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 3
			W: abc
			S: 250 2.0.0 3 octets received
			C: BDAT -6
			W: RSET\r\n
			S: 501 5.5.4
			S: EOF
		`,
		check: bodies(),
	}, {
		name:   "CHUNKING disabled",
		server: func(s *Server) { s.DisableExtensions = ExtChunking },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 6 LAST
			W: RSET\r\n
			S: 502 5.5.1 BDAT not available
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
		`,
		check: bodies(""),
	}, {
		name:  "long line between chunks",
		modes: []mode{modePlain},
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 3
			W: abc
			S: 250 2.0.0 3 octets received
			C: NOOP ` + string(make([]byte, 3000)) + `
			S: 500 5.5.2 Line too long
			C: NOOP
			S: 250 2.0.0
		`,
		check: bodies(),
	}})
}

// An early verdict on a BDAT body waits for the end of the current chunk
// only; a session that accepts reads through to LAST before any reply.
func TestBDATHookVerdicts(t *testing.T) {
	t.Parallel()
	inModes(t, allModes, func(t *testing.T, m mode) {
		b := newBackend(t)
		b.onData = func(ctx context.Context, r io.Reader) error {
			buf := make([]byte, 2)
			io.ReadFull(r, buf)
			if string(buf) == "no" {
				return smtp.NewError(554, smtp.EnhancedCode{5, 6, 0}, "Content refused")
			}
			return nil
		}
		c := serve(t, m, &Server{Handler: b}).dial()
		c.startTx()
		c.run(`
			C: BDAT 4
			W: nope
			S: 554 5.6.0 Content refused
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 4
			W: yes!
			S: 250 2.0.0 4 octets received
			C: BDAT 4
			W: more
			S: 250 2.0.0 4 octets received
			C: BDAT 2 LAST
			W: ..
			S: 250 2.0.0 OK
		`)
		c.quit()
	})
}

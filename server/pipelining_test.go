package server

import (
	"testing"
)

// RFC 2920 3.2: the server answers a pipelined batch in order, and sends
// the replies when its input is exhausted: one write for the batch.
func TestPipelining(t *testing.T) {
	t.Parallel()
	inModes(t, allModes, func(t *testing.T, m mode) {
		b := newBackend(t)
		h := serve(t, m, &Server{Handler: b})
		c := h.dial()
		// A round trip first, so that nothing of the handshake or the
		// greeting is still being written.
		c.run(`
			C: NOOP
			S: 250
		`)
		sc := h.serverConn(c)
		before := sc.writes.Load()
		c.run(`
			C: EHLO client.test
			C: MAIL FROM:<a@example.com>
			C: RCPT TO:<b@example.com>
			C: RCPT TO:<reject@example.com>
			C: RCPT TO:<c@example.com>
			C: NOOP
			C: DATA
			S: 250-mx.test greets client.test
			S: 250 2.1.0
			S: 250 2.1.5
			S: 550 5.1.1
			S: 250 2.1.5
			S: 250 2.0.0
			S: 354
		`)
		if c.br.Buffered() != 0 {
			t.Errorf("%d bytes more than the batch's replies", c.br.Buffered())
		}
		equal(t, "server writes for the batch", sc.writes.Load()-before, 1)

		before = sc.writes.Load()
		c.run(`
			C: Subject: pipelined
			C: .
			C: MAIL FROM:<a@example.com>
			C: RCPT TO:<b@example.com>
			C: BDAT 5
			W: hello
			C: BDAT 0 LAST
			C: RSET
		`)
		lmtp := ""
		if m == modeLMTP {
			lmtp = "S: 250 2.0.0 OK\n" // one per recipient
		}
		c.run(`
			S: 250 2.0.0 OK
			` + lmtp + `
			S: 250 2.1.0
			S: 250 2.1.5
			S: 250 2.0.0 5 octets received
			S: 250 2.0.0 OK
			S: 250 2.0.0 OK
		`)
		equal(t, "server writes for the second batch", sc.writes.Load()-before, 1)
		c.quit()

		msgs := b.Messages()
		if len(msgs) != 2 || msgs[0].body != "Subject: pipelined\r\n" || msgs[1].body != "hello" {
			t.Errorf("messages: %+v", msgs)
		}
	})
}

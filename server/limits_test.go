package server

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// rcpts returns n pipelined RCPT commands for a script.
func rcpts(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "C: RCPT TO:<r%d@example.com>\n", i)
	}
	return b.String()
}

// replies returns n expected replies for a script.
func replies(n int, reply string) string {
	return strings.Repeat("S: "+reply+"\n", n)
}

func TestLimits(t *testing.T) {
	t.Parallel()
	runScripts(t, []scriptCase{{
		name:   "MaxLineLength",
		modes:  allModes,
		server: func(s *Server) { s.MaxLineLength = 64 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: NOOP ` + strings.Repeat("x", 58) + `
			S: 500 5.5.2 Line too long
			C: NOOP ` + strings.Repeat("x", 57) + `
			S: 250 2.0.0
		`,
		serves: true,
	}, {
		name:  "command line past any bound",
		modes: allModes,
		script: `
			C: EHLO client.test
			S: 250-mx.test
			W: NOOP ` + strings.Repeat("x", 1100<<10) + `
			S: 500 5.5.2 Line too long, closing connection
			S: EOF
		`,
		serves: true,
	}, {
		name:   "MaxRecipients",
		server: func(s *Server) { s.MaxRecipients = 2 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			C: RCPT TO:<b@example.com>
			C: RCPT TO:<c@example.com>
			C: RCPT TO:<d@example.com>
			C: DATA
			S: 250 2.1.0
			S: 250 2.1.5
			S: 250 2.1.5
			S: 452 4.5.3 Too many recipients
			S: 354
			C: .
			S: 250 2.0.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equal(t, "recipients", len(b.Messages()[0].rcpts), 2)
		},
		serves: true,
	}, {
		name: "default MaxRecipients is 1000",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			` + rcpts(1001) + replies(1000, "250 2.1.5") + `
			S: 452 4.5.3
		`,
	}, {
		name:   "negative MaxRecipients means no limit",
		server: func(s *Server) { s.MaxRecipients = -1 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			` + rcpts(1001) + replies(1001, "250 2.1.5"),
	}, {
		name:   "MaxJunkCommands",
		modes:  allModes,
		server: func(s *Server) { s.MaxJunkCommands = 3 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: NOOP
			S: 250 2.0.0
			C: RSET
			S: 250 2.0.0
			C: VRFY someone
			S: 252 2.5.0
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
			C: HELP
			S: 214 2.0.0
			C: NOOP
			S: 250 2.0.0
			C: NOOP
			S: 250 2.0.0
			C: NOOP
			S: 421 4.7.0 mx.test Too many commands without mail
			S: EOF
		`,
		serves: true,
	}, {
		name: "default MaxJunkCommands is 100",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			` + strings.Repeat("C: NOOP\n", 101) + replies(100, "250 2.0.0") + `
			S: 421 4.7.0
			S: EOF
		`,
	}, {
		name:   "MaxTransactions",
		modes:  allModes,
		server: func(s *Server) { s.MaxTransactions = 2 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 0 LAST
			S: 250 2.0.0
			C: MAIL FROM:<a@example.com>
			S: 421 4.7.0 mx.test Too many messages
			S: EOF
		`,
		serves: true,
	}, {
		name:   "MaxErrors",
		modes:  allModes,
		server: func(s *Server) { s.MaxErrors = 3 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: FOO
			S: 500 5.5.2
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<reject@example.com>
			S: 550 5.1.1
			C: NOOP
			S: 250 2.0.0
			C: BAR
			C: NOOP
			C: NOOP
			S: 500 5.5.2
			S: 421 4.7.0 mx.test Too many errors
			S: EOF
		`,
		serves: true,
	}, {
		name:   "negative MaxErrors means no limit",
		server: func(s *Server) { s.MaxErrors = -1 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			` + strings.Repeat("C: FOO\n", 30) + replies(30, "500 5.5.2") + `
			C: NOOP
			S: 250 2.0.0
		`,
	}, {
		name:   "MaxCommandsBeforeHello",
		modes:  allModes,
		server: func(s *Server) { s.MaxCommandsBeforeHello = 2 },
		script: `
			C: NOOP
			S: 250 OK
			C: RSET
			S: 250 OK
			C: NOOP
			S: 421 4.7.0 mx.test Too many commands before HELO
			S: EOF
		`,
		serves: true,
	}, {
		name:  "NUL, CR and invalid UTF-8 in commands",
		modes: allModes,
		script: `
			C: EHLO client.test
			S: 250-mx.test
			W: NOOP a\x00b\r\n
			S: 500 5.5.2 Invalid character in command
			W: \x00\r\n
			S: 500 5.5.2 Invalid character
			W: NOOP\rRSET\r\n
			S: 500 5.5.2 Invalid character
			W: MAIL FROM:<\xff@example.com>\r\n
			S: 500 5.5.2 Invalid UTF-8 in command
			W: NOOP \xc3\x28\r\n
			S: 500 5.5.2 Invalid UTF-8
			W: \r\n
			S: 500 5.5.2 Empty command
			C: NOOP
			S: 250 2.0.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equal(t, "MAIL hook calls", len(b.Addrs()), 0)
		},
		serves: true,
	}, {
		name:   "negative line limits mean the defaults",
		server: func(s *Server) { s.MaxLineLength = -1; s.MaxTextLineLength = -5 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: NOOP ` + strings.Repeat("x", 2000) + `
			S: 250 2.0.0
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: ` + strings.Repeat("x", 998) + `
			C: .
			S: 250 2.0.0
		`,
	}})
}

// busyFor sends cmd every 50ms for about d, each time expecting reply, and
// reports whether the server kept the session open throughout. A 421
// that comes within timeout/2 of the previous reply means the server
// timed out a busy client: a failure. One that comes later means this
// process stalled (a loaded machine) and proves nothing: busyFor returns
// false, and the caller tries again.
func busyFor(t *testing.T, c *client, d, timeout time.Duration, cmd, reply string) bool {
	t.Helper()
	start, last := time.Now(), time.Now()
	for time.Since(start) < d {
		time.Sleep(50 * time.Millisecond)
		c.write(cmd)
		got, err := c.readReply()
		now := time.Now()
		switch {
		case err == nil && strings.HasPrefix(got, reply):
			last = now
		case err == nil && strings.HasPrefix(got, "421") && now.Sub(last) < timeout/2:
			t.Fatalf("timed out %v after the last reply: %q", now.Sub(last), got)
		case err == nil && strings.HasPrefix(got, "421"):
			return false
		default:
			t.Fatalf("want %q, got %q (%v)", reply, got, err)
		}
	}
	return true
}

// retry runs f until it reports a conclusive result, at most three times.
func retry(t *testing.T, f func() bool) {
	t.Helper()
	for range 3 {
		if f() {
			return
		}
	}
	t.Skip("the machine stalled longer than the timeouts in every attempt")
}

func TestTimeouts(t *testing.T) {
	t.Parallel()
	t.Run("ReadTimeout", func(t *testing.T) {
		t.Parallel()
		inModes(t, allModes, func(t *testing.T, m mode) {
			const timeout = 400 * time.Millisecond
			b := newBackend(t)
			h := serve(t, m, &Server{Handler: b, ReadTimeout: timeout})
			// Activity keeps the session alive well past one timeout...
			var c *client
			retry(t, func() bool {
				c = h.dial()
				c.run(`
					C: EHLO client.test
					S: 250-mx.test
				`)
				return busyFor(t, c, 2*timeout, timeout, "NOOP\r\n", "250 2.0.0")
			})
			// ...and silence ends it.
			c.run(`
				S: 421 4.4.2 mx.test Timeout
				S: EOF
			`)
			if b.waitClose() == nil {
				t.Error("Close got nil after a timeout")
			}
			h.checkServes()
		})
	})
	t.Run("ReadTimeout before EHLO", func(t *testing.T) {
		t.Parallel()
		h := serve(t, modePlain, &Server{Handler: newBackend(t), ReadTimeout: 200 * time.Millisecond})
		h.dial().run(`
			S: 421 4.4.2 mx.test Timeout
			S: EOF
		`)
		h.checkServes()
	})
	for _, how := range []string{"DATA", "BDAT"} {
		t.Run("DataTimeout/"+how, func(t *testing.T) {
			t.Parallel()
			inModes(t, allModes, func(t *testing.T, m mode) {
				b := newBackend(t)
				got := make(chan string, 1)
				b.onData = func(ctx context.Context, r io.Reader) error {
					body, err := io.ReadAll(r)
					got <- string(body)
					return err
				}
				h := serve(t, m, &Server{Handler: b, DataTimeout: 200 * time.Millisecond})
				c := h.dial()
				c.startTx()
				if how == "DATA" {
					c.run(`
						C: DATA
						S: 354
						C: partial
					`)
				} else {
					c.write("BDAT 100 LAST\r\npartial\r\n") // 91 bytes short
				}
				c.run(`
					S: 421 4.4.2 mx.test Timeout
					S: EOF
				`)
				equal(t, "body the hook saw", <-got, "partial\r\n")
				b.waitClose()
				equal(t, "messages", len(b.Messages()), 0)
				b.setData(nil)
				h.checkServes()
			})
		})
	}
	t.Run("DataTimeout is per read", func(t *testing.T) {
		t.Parallel()
		const timeout = 400 * time.Millisecond
		b := newBackend(t)
		h := serve(t, modePlain, &Server{Handler: b, DataTimeout: timeout})
		retry(t, func() bool {
			c := h.dial()
			c.startTx()
			if !busyFor(t, c, 2*timeout, timeout, "BDAT 6\r\nchunk\n", "250 2.0.0 6 octets received") {
				return false
			}
			c.run(`
				C: BDAT 0 LAST
				S: 250 2.0.0 OK
			`)
			c.quit()
			return true
		})
	})
}

// Deadlines move with each read by more than the slack, at once when the
// timeout shrinks, and always after Shutdown poked a session that has
// since become busy.
func TestReadDeadlines(t *testing.T) {
	t.Parallel()
	fc := &deadlineConn{}
	s := &session{srv: &Server{}, nc: fc}
	tc := &timeoutConn{Conn: fc, s: s, readTimeout: 400 * time.Millisecond}
	read := func() time.Time {
		t.Helper()
		n := len(fc.deadlines)
		tc.Read(nil)
		if len(fc.deadlines) != n+1 {
			t.Fatalf("read %d: deadline not moved", n)
		}
		return fc.deadlines[n]
	}
	d1 := read()
	time.Sleep(deadlineSlack(tc.readTimeout) + 10*time.Millisecond)
	if d2 := read(); !d2.After(d1) {
		t.Errorf("deadline went from %v to %v", d1, d2)
	}
	tc.readTimeout = 5 * time.Minute
	read()
	tc.readTimeout = 100 * time.Millisecond // as DATA switches to DataTimeout
	if d := read(); time.Until(d) > 100*time.Millisecond {
		t.Errorf("deadline %v away, want at most 100ms", time.Until(d))
	}

	tc.readTimeout = 5 * time.Minute
	read()
	s.srv.inShutdown.Store(true)
	s.state.Store(stateIdle)
	s.interruptIfIdle()
	if d := fc.deadlines[len(fc.deadlines)-1]; d.After(time.Now()) {
		t.Fatalf("Shutdown set deadline %v", d)
	}
	if _, err := tc.Read(nil); err != errShuttingDown {
		t.Errorf("idle read during shutdown: %v", err)
	}
	s.state.Store(stateBusy) // a command arrived before the poke landed
	if d := read(); !d.After(time.Now()) {
		t.Errorf("busy session kept the past deadline %v", d)
	}
}

type deadlineConn struct {
	net.Conn
	deadlines []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return nil
}

func (c *deadlineConn) Read(p []byte) (int, error) { return 0, nil }

func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		server func(*Server)
	}{
		{"MaxConnections", func(s *Server) { s.MaxConnections = 2 }},
		{"MaxConnectionsPerIP", func(s *Server) { s.MaxConnectionsPerIP = 2 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			inModes(t, allModes, func(t *testing.T, m mode) {
				b := newBackend(t)
				srv := &Server{Handler: b}
				tc.server(srv)
				h := serve(t, m, srv)
				c1, c2 := h.dial(), h.dial()
				c3 := h.dialRaw()
				c3.run(`
					S: 421 4.7.0 mx.test Too many connections
					S: EOF
				`)
				// The refused connection reached no hook.
				equal(t, "connections the handler saw", strings.Count(strings.Join(b.Events(), ","), "connect"), 2)
				c1.quit()
				// The freed place is at once available.
				c4 := h.dial()
				c2.quit()
				c4.quit()
				h.checkServes()
			})
		})
	}
	t.Run("negative means no limit", func(t *testing.T) {
		t.Parallel()
		h := serve(t, modePlain, &Server{Handler: newBackend(t), MaxConnections: -1, MaxConnectionsPerIP: -1})
		var cs []*client
		for range 60 {
			cs = append(cs, h.dial())
		}
		for _, c := range cs {
			c.quit()
		}
	})
}

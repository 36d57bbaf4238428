package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

// startTx says EHLO, MAIL and RCPT.
func (c *client) startTx() {
	c.t.Helper()
	c.run(`
		C: EHLO client.test
		S: 250-mx.test
		C: MAIL FROM:<a@example.com>
		S: 250 2.1.0
		C: RCPT TO:<b@example.com>
		S: 250 2.1.5
	`)
}

func TestDataDotUnstuffing(t *testing.T) {
	t.Parallel()
	bodies := []struct{ name, body string }{
		{"empty", ""},
		{"one line", "Subject: hi\r\n"},
		{"header and body", "Subject: hi\r\nFrom: a@example.com\r\n\r\nHello.\r\n"},
		{"line that is a dot", "before\r\n.\r\nafter\r\n"},
		{"line that is two dots", "..\r\n"},
		{"leading dots", ".hidden\r\n..two\r\n...three\r\n"},
		{"first line a dot", ".\r\n"},
		{"dot CRLF dot", ".\r\n.\r\n.\r\n"},
		{"dots inside lines", "a.b\r\n a .\r\n.\r\n"},
		{"blank lines", "\r\n\r\n\r\n"},
		{"8-bit and NUL", "caf\xc3\xa9\r\n\x00\x01\x7f\xff\r\n"},
		{"longest line", strings.Repeat("x", 998) + "\r\n"},
		{"longest stuffed line", "." + strings.Repeat("x", 997) + "\r\n"},
		{"tabs and spaces", "\t\r\n \r\n. \r\n"},
	}
	inModes(t, allModes, func(t *testing.T, m mode) {
		b := newBackend(t)
		c := serve(t, m, &Server{Handler: b}).dial()
		c.startTx()
		for i, tc := range bodies {
			if i > 0 {
				c.run(`
					C: MAIL FROM:<a@example.com>
					S: 250 2.1.0
					C: RCPT TO:<b@example.com>
					S: 250 2.1.5
				`)
			}
			c.run(`
				C: DATA
				S: 354
			`)
			c.sendData(tc.body)
			c.expect("250 2.0.0 OK: queued as ")
			msgs := b.Messages()
			if len(msgs) != i+1 {
				t.Fatalf("%s: %d messages", tc.name, len(msgs))
			}
			if got := msgs[i].body; got != tc.body {
				t.Errorf("%s: hook got %q, want %q", tc.name, got, tc.body)
			}
		}
		c.quit()
	})
}

// randomBody returns a body of at least n bytes: lines of up to 998
// printable and 8-bit bytes, many of them empty or short, and a fifth of
// them beginning with a dot.
func randomBody(r *rand.Rand, n int) string {
	pool := make([]byte, 4096)
	for i := range pool {
		pool[i] = byte(' ' + r.IntN(95))
		if r.IntN(50) == 0 {
			pool[i] = byte(0x80 + r.IntN(128))
		}
	}
	var b strings.Builder
	b.Grow(n + 1024)
	for b.Len() < n {
		l := r.IntN(999)
		if r.IntN(4) == 0 {
			l = r.IntN(5)
		}
		if l > 0 && r.IntN(5) == 0 {
			b.WriteByte('.')
			l--
		}
		off := r.IntN(len(pool) - l + 1)
		b.Write(pool[off : off+l])
		b.WriteString("\r\n")
	}
	return b.String()
}

// writeSegments sends p in pieces of random sizes, so that line ends,
// dots and CRLF pairs fall on every kind of boundary.
func (c *client) writeSegments(r *rand.Rand, p string, maxPiece int) {
	c.t.Helper()
	for len(p) > 0 {
		n := min(len(p), 1+r.IntN(maxPiece))
		c.write(p[:n])
		p = p[n:]
	}
}

func TestDataLargeBodyStreamed(t *testing.T) {
	t.Parallel()
	readers := []struct {
		name string
		size int
		read func(r io.Reader) ([]byte, error) // returns the sha256
	}{
		{"io.Copy", 4 << 20, func(r io.Reader) ([]byte, error) {
			h := sha256.New()
			_, err := io.Copy(h, r)
			return h.Sum(nil), err
		}},
		{"small reads", 256 << 10, func(r io.Reader) ([]byte, error) {
			h := sha256.New()
			buf := make([]byte, 7)
			for {
				n, err := r.Read(buf)
				h.Write(buf[:n])
				if err == io.EOF {
					return h.Sum(nil), nil
				}
				if err != nil {
					return nil, err
				}
			}
		}},
	}
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) {
			t.Parallel()
			inModes(t, allModes, func(t *testing.T, m mode) {
				r := rand.New(rand.NewPCG(1, uint64(len(m))))
				body := randomBody(r, rd.size)
				want := sha256.Sum256([]byte(body))
				sums := make(chan []byte, 1)
				b := newBackend(t)
				b.onData = func(ctx context.Context, r io.Reader) error {
					sum, err := rd.read(r)
					sums <- sum
					return err
				}
				c := serve(t, m, &Server{Handler: b}).dial()
				c.startTx()
				c.run(`
					C: DATA
					S: 354
				`)
				c.writeSegments(r, dotStuff(body)+".\r\n", 64<<10)
				c.expect("250 2.0.0")
				if got := <-sums; string(got) != string(want[:]) {
					t.Errorf("body digest %x, want %x", got, want)
				}
				c.quit()
			})
		})
	}
}

func TestDataBareLineEndings(t *testing.T) {
	t.Parallel()
	// Each payload follows "354"; none may end the data early, none may
	// get a message accepted, and the server must close the connection.
	const smuggled = "MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nSubject: spoofed\r\n.\r\n"
	payloads := []struct{ name, data string }{
		{"bare LF in a line", "Subject: x\r\na\nb\r\n.\r\n"},
		{"bare CR in a line", "Subject: x\r\na\rb\r\n.\r\n"},
		{"LF dot LF", "Subject: x\r\n\n.\n" + smuggled},
		{"CR dot CR", "Subject: x\r\n\r.\r" + smuggled},
		{"LF dot CRLF", "Subject: x\r\nhello\n.\r\n" + smuggled},
		{"CRLF dot LF", "Subject: x\r\n.\n" + smuggled},
		{"CRLF dot CR", "Subject: x\r\n.\r" + smuggled},
		{"CR CRLF", "Subject: x\r\r\n.\r\n" + smuggled},
		{"bare LF first", "\n.\r\n" + smuggled},
		{"bare LF at the end", "Subject: x\r\nlast\n"},
		{"dot CR CR LF", "Subject: x\r\n.\r\r\n" + smuggled},
	}
	hooks := []struct {
		name string
		data func(ctx context.Context, r io.Reader) error
	}{
		{"hook reads", nil},
		{"hook returns nil at the error", func(ctx context.Context, r io.Reader) error {
			io.Copy(io.Discard, r)
			return nil
		}},
		{"hook returns nil without reading", func(ctx context.Context, r io.Reader) error { return nil }},
		{"hook returns a success", func(ctx context.Context, r io.Reader) error {
			io.Copy(io.Discard, r)
			return smtp.NewError(250, smtp.EnhancedCode{2, 0, 0}, "Fine by me")
		}},
	}
	for _, hk := range hooks {
		t.Run(hk.name, func(t *testing.T) {
			t.Parallel()
			for _, p := range payloads {
				t.Run(p.name, func(t *testing.T) {
					t.Parallel()
					inModes(t, allModes, func(t *testing.T, m mode) {
						b := newBackend(t)
						b.onData = hk.data
						h := serve(t, m, &Server{Handler: b})
						c := h.dial()
						c.startTx()
						c.run(`
							C: DATA
							S: 354
						`)
						c.write(p.data)
						c.run(`
							S: 550 5.5.2 Bare CR or LF
							S: EOF
						`)
						b.waitClose()
						equal(t, "messages", len(b.Messages()), 0)
						for _, ev := range b.Events() {
							if strings.Contains(ev, "evil") || strings.Contains(ev, "victim") {
								t.Errorf("smuggled command ran: %s", ev)
							}
						}
					})
				})
			}
		})
	}
}

func TestDataLimits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		server func(*Server)
		body   string
		reply  string
	}{
		{"message too big", func(s *Server) { s.MaxMessageBytes = 100 }, strings.Repeat("0123456789\r\n", 10), "552 5.3.4 Message size exceeds fixed limit"},
		{"message too big by one line", func(s *Server) { s.MaxMessageBytes = 24 }, "0123456789\r\n0123456789\r\nx\r\n", "552 5.3.4"},
		{"text line too long", func(s *Server) { s.MaxTextLineLength = 100 }, "short\r\n" + strings.Repeat("x", 99) + "\r\nshort\r\n", "554 5.6.0 Message line too long"},
		{"default text line limit", nil, strings.Repeat("x", 999) + "\r\n", "554 5.6.0"},
		{"line longer than the buffer", nil, "a\r\n" + strings.Repeat("y", 200<<10) + "\r\n.\r\n..\r\nb\r\n", "554 5.6.0"},
		{"too big and a long line", func(s *Server) { s.MaxMessageBytes = 10 }, strings.Repeat("z", 5000) + "\r\n", "55"},
	}
	hooks := []struct {
		name string
		data func(ctx context.Context, r io.Reader) error
	}{
		{"hook reads", nil},
		{"hook ignores the error", func(ctx context.Context, r io.Reader) error {
			io.Copy(io.Discard, r)
			return nil
		}},
		{"hook does not read", func(ctx context.Context, r io.Reader) error { return nil }},
	}
	for _, tc := range cases {
		for _, hk := range hooks {
			t.Run(tc.name+"/"+hk.name, func(t *testing.T) {
				t.Parallel()
				inModes(t, []mode{modePlain, modeTLS, modeLMTP}, func(t *testing.T, m mode) {
					b := newBackend(t)
					b.onData = hk.data
					srv := &Server{Handler: b}
					if tc.server != nil {
						tc.server(srv)
					}
					c := serve(t, m, srv).dial()
					c.startTx()
					c.run(`
						C: DATA
						S: 354
					`)
					c.sendData(tc.body)
					c.expect(tc.reply)
					// The session goes on and takes the next message.
					b.setData(nil)
					c.run(`
						C: MAIL FROM:<a@example.com>
						S: 250 2.1.0
						C: RCPT TO:<b@example.com>
						S: 250 2.1.5
						C: DATA
						S: 354
						C: ok
						C: .
						S: 250 2.0.0
					`)
					c.quit()
					msgs := b.Messages()
					if len(msgs) != 1 || msgs[0].body != "ok\r\n" {
						t.Errorf("messages: %+v", msgs)
					}
				})
			})
		}
	}
}

func TestDataHookResults(t *testing.T) {
	t.Parallel()
	// early marks hooks that answer before the body ends: with BDAT their
	// reply comes after the first chunk, and the transaction is over.
	cases := []struct {
		name  string
		data  func(ctx context.Context, r io.Reader) error
		reply string
		early bool
	}{
		{"nil without reading", func(ctx context.Context, r io.Reader) error { return nil }, "250 2.0.0 OK: queued as ", false},
		{"nil after part", func(ctx context.Context, r io.Reader) error {
			io.ReadFull(r, make([]byte, 3))
			return nil
		}, "250 2.0.0 OK: queued as ", false},
		{"untyped error", func(ctx context.Context, r io.Reader) error {
			io.Copy(io.Discard, r)
			return errors.New("disk full")
		}, "451 4.3.0 Temporary local problem, try again later", false},
		{"typed rejection", func(ctx context.Context, r io.Reader) error {
			return smtp.NewError(550, smtp.EnhancedCode{5, 7, 1}, "Spam")
		}, "550 5.7.1 Spam", true},
		{"typed deferral, wrapped", func(ctx context.Context, r io.Reader) error {
			return errors.Join(errors.New("cause"), smtp.NewError(452, smtp.EnhancedCode{4, 3, 1}, "Spool full"))
		}, "452 4.3.1 Spool full", true},
		{"typed success", func(ctx context.Context, r io.Reader) error {
			io.Copy(io.Discard, r)
			return smtp.NewError(250, smtp.EnhancedCode{2, 6, 0}, "Queued as X123")
		}, "250 2.6.0 Queued as X123", false},
		{"panic", func(ctx context.Context, r io.Reader) error { panic("boom") }, "451 4.3.0", true},
		{"panic mid-body", func(ctx context.Context, r io.Reader) error {
			io.ReadFull(r, make([]byte, 10))
			panic(errors.New("boom"))
		}, "451 4.3.0", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inModes(t, allModes, func(t *testing.T, m mode) {
				b := newBackend(t)
				b.onData = tc.data
				h := serve(t, m, &Server{Handler: b})
				for _, how := range []string{"DATA", "BDAT"} {
					c := h.dial()
					c.startTx()
					if how == "DATA" {
						c.run(`
							C: DATA
							S: 354
						`)
						c.sendData("Subject: hook results\r\n\r\n" + strings.Repeat("body\r\n", 1000))
						c.expect(tc.reply)
					} else if tc.early {
						c.run(`
							C: BDAT 12
							W: Subject: a\r\n
						`)
						c.expect(tc.reply)
						c.run(`
							C: BDAT 5 LAST
							W: body!
							S: 503 5.5.1
						`)
					} else {
						c.run(`
							C: BDAT 12
							W: Subject: a\r\n
							S: 250 2.0.0 12 octets received
							C: BDAT 5 LAST
							W: body!
						`)
						c.expect(tc.reply)
					}
					// The session goes on.
					c.run(`
						C: NOOP
						S: 250 2.0.0
					`)
					c.quit()
				}
				// And so does the server.
				b.setData(nil)
				h.checkServes()
			})
		})
	}
}

package server

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

func TestNewSessionRefusal(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		err    func() error
		script string
	}{
		{"typed 5xx", func() error { return smtp.NewError(554, smtp.EnhancedCode{5, 7, 1}, "No service for you") }, `
			S: 554 5.7.1 mx.test No service for you
			C: EHLO client.test
			S: 503 No service here, send QUIT
			C: MAIL FROM:<a@example.com>
			S: 503 No service here
			C: STARTTLS
			S: 503 No service here
			C: QUIT
			S: 221
			S: EOF
		`},
		{"typed 550 is sent as 554", func() error { return smtp.Reject("Blocked") }, `
			S: 554 5.7.1 mx.test Blocked
			C: QUIT
			S: 221
			S: EOF
		`},
		{"typed 4xx", func() error { return smtp.NewError(450, smtp.EnhancedCode{4, 7, 1}, "Slow down") }, `
			S: 421 4.7.1 mx.test Slow down
			S: EOF
		`},
		{"untyped", func() error { return errors.New("DNSBL lookup failed") }, `
			S: 421 4.3.0 mx.test Temporary local problem
			S: EOF
		`},
		{"panic", func() error { panic("boom") }, `
			S: 421 4.3.0
			S: EOF
		`},
		{"no session", func() error { return errNoSession }, `
			S: 421 4.3.0
			S: EOF
		`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			inModes(t, []mode{modePlain, modeTLS, modeLMTP}, func(t *testing.T, m mode) {
				var n atomic.Int32
				b := newBackend(t)
				b.onConnect = func(ctx context.Context, c *Conn) error {
					if n.Add(1) > 1 {
						return nil
					}
					return tc.err()
				}
				srv := &Server{Handler: noSession{b}}
				h := serve(t, m, srv)
				h.dialRaw().run(tc.script)
				// The refused connection had no session to close.
				equalSlices(t, "events", b.Events(), []string{"connect"})
				h.checkServes()
			})
		})
	}
}

var errNoSession = errors.New("test: return a nil session and no error")

// noSession turns errNoSession into a nil Session and nil error.
type noSession struct{ *backend }

func (h noSession) NewSession(ctx context.Context, c *Conn) (Session, error) {
	s, err := h.backend.NewSession(ctx, c)
	if err == errNoSession {
		return nil, nil
	}
	return s, err
}

type ctxKey struct{}

// Every hook gets a context that carries the connection and the base
// context's values, and that is cancelled once the session is over; Close
// is called once, with nil after QUIT and with the cause otherwise.
func TestHookContexts(t *testing.T) {
	t.Parallel()
	inModes(t, allModes, func(t *testing.T, m mode) {
		b := newBackend(t)
		var conns []*Conn
		b.onConnect = func(ctx context.Context, c *Conn) error {
			b.mu.Lock()
			defer b.mu.Unlock()
			conns = append(conns, c)
			return nil
		}
		h := serve(t, m, &Server{Handler: b, BaseContext: func(net.Listener) context.Context {
			return context.WithValue(context.Background(), ctxKey{}, "base")
		}})
		c := h.dial()
		c.run(`
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RSET
			S: 250 2.0.0
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
			C: NOOP
			S: 250 2.0.0
		`)
		c.quit()
		if err := b.waitClose(); err != nil {
			t.Errorf("Close after QUIT got %v", err)
		}
		equalSlices(t, "events", b.sessionEvents(m), []string{
			"hello client.test", "mail <a@example.com>", "reset",
			"mail <a@example.com>", "rcpt <b@example.com>", "data", "reset", "close"})

		// A client that goes away without QUIT.
		c = h.dial()
		c.run(`
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
		`)
		c.nc.Close()
		if err := b.waitClose(); err == nil {
			t.Error("Close after a disconnect got nil")
		}

		h.srv.Close()
		h.wait()
		b.mu.Lock()
		defer b.mu.Unlock()
		closes := 0
		for _, ev := range b.events {
			if ev == "close" || ev == "close error" {
				closes++
			}
		}
		equal(t, "Close calls", closes, 2)
		equal(t, "connections", len(conns), 2)
		for i, ctx := range b.ctxs {
			c := ConnFromContext(ctx)
			if c != conns[0] && c != conns[1] {
				t.Errorf("hook context %d carries %v", i, c)
			}
			if v, _ := ctx.Value(ctxKey{}).(string); v != "base" {
				t.Errorf("hook context %d lost the base context's value", i)
			}
			if ctx.Err() == nil {
				t.Errorf("hook context %d not cancelled after the session", i)
			}
		}
		if conns[0] == conns[1] || conns[0].ID == conns[1].ID {
			t.Error("two connections share a Conn or an ID")
		}
	})
}

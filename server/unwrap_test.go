package server

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

// logging is middleware as a user would write it: it sees the core hooks
// of every session and implements none of the optional interfaces itself.
type logging struct {
	inner Session
	mu    *sync.Mutex
	seen  *[]string
}

func (l logging) note(s string) { l.mu.Lock(); *l.seen = append(*l.seen, s); l.mu.Unlock() }

func (l logging) Mail(ctx context.Context, from smtp.Address, o *smtp.MailOptions) error {
	l.note("mail " + from.String())
	return l.inner.Mail(ctx, from, o)
}
func (l logging) Rcpt(ctx context.Context, to smtp.Address, o *smtp.RcptOptions) error {
	l.note("rcpt " + to.String())
	return l.inner.Rcpt(ctx, to, o)
}
func (l logging) Data(ctx context.Context, r io.Reader) error {
	l.note("data")
	return l.inner.Data(ctx, r)
}
func (l logging) Reset(ctx context.Context)            { l.inner.Reset(ctx) }
func (l logging) Close(ctx context.Context, err error) { l.inner.Close(ctx, err) }
func (l logging) Unwrap() Session                      { return l.inner }

type loggingHandler struct {
	h    Handler
	mu   sync.Mutex
	seen []string
}

func (lh *loggingHandler) NewSession(ctx context.Context, c *Conn) (Session, error) {
	s, err := lh.h.NewSession(ctx, c)
	if err != nil {
		return nil, err
	}
	// Twice, so the server has to walk a chain, not one step.
	return logging{inner: logging{inner: s, mu: &lh.mu, seen: &lh.seen}, mu: &lh.mu, seen: &lh.seen}, nil
}

// TestUnwrap: a wrapper with Unwrap keeps the wrapped session's AUTH, VRFY,
// HELO check and LMTP results, and still sees the hooks it implements.
func TestUnwrap(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		mode    mode
		backend func(*backend)
		script  string
		seen    int // hooks the wrapper saw, twice each (two layers)
	}{{
		name:    "AUTH",
		mode:    modeStartTLS,
		backend: func(b *backend) { b.auth = true },
		script: `
			C: EHLO client.test
			S: 250-mx.test greets client.test\n250-PIPELINING\n250-SIZE 10240000\n250-8BITMIME\n250-ENHANCEDSTATUSCODES\n250-SMTPUTF8\n250-CHUNKING\n250-BINARYMIME\n250-DSN\n250 AUTH PLAIN LOGIN
			C: AUTH PLAIN AHVzZXIAd3Jvbmc=
			S: 535 5.7.8
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 235 2.7.0
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
		`,
		seen: 2,
	}, {
		name: "VRFY and HELO check",
		mode: modePlain,
		backend: func(b *backend) {
			b.verify = true
			b.onHello = func(ctx context.Context, name string) error {
				if name == "bad.test" {
					return smtp.NewError(550, smtp.EnhancedCode{5, 7, 1}, "Not you")
				}
				return nil
			}
		},
		script: `
			C: EHLO bad.test
			S: 550 Not you
			C: EHLO client.test
			S: 250-mx.test
			C: VRFY nobody
			S: 550 5.1.1
			C: VRFY jo
			S: 250 2.1.5 Jo User <jo@example.com>
		`,
	}, {
		name: "LMTP results",
		mode: modeLMTP,
		backend: func(b *backend) {
			b.onLMTP = func(ctx context.Context, r io.Reader, st *LMTPStatus) error {
				io.Copy(io.Discard, r)
				st.Set(1, smtp.NewError(452, smtp.EnhancedCode{4, 2, 2}, "Mailbox full"))
				return nil
			}
		},
		script: `
			C: LHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: RCPT TO:<c@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
			S: 452 4.2.2 Mailbox full
		`,
		seen: 6, // MAIL and two RCPTs; LMTPData went to the session that has it
	}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t)
			tc.backend(b)
			lh := &loggingHandler{h: b}
			h := serve(t, tc.mode, &Server{Handler: lh})
			h.dial().run(tc.script)
			lh.mu.Lock()
			defer lh.mu.Unlock()
			if len(lh.seen) != tc.seen {
				t.Errorf("the wrapper saw %q, want %d hooks", lh.seen, tc.seen)
			}
		})
	}
}

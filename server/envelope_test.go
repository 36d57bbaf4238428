package server

import (
	"context"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

// The simple path: an EnvelopeFunc gets each message with its envelope,
// its body and the connection it came on.
func TestEnvelopeFunc(t *testing.T) {
	t.Parallel()
	type got struct {
		from     smtp.Address
		opts     smtp.MailOptions
		to       []Recipient
		body     string
		helo     string
		tls      bool
		identity string
		received string
	}
	inModes(t, allModes, func(t *testing.T, m mode) {
		var mu sync.Mutex
		var envs []got
		fn := EnvelopeFunc(func(ctx context.Context, e *Envelope) error {
			body, err := e.Bytes()
			if err != nil {
				return err
			}
			if ConnFromContext(ctx) != e.Conn {
				t.Error("the context's Conn is not the envelope's")
			}
			mu.Lock()
			defer mu.Unlock()
			envs = append(envs, got{e.From, e.MailOptions, e.To, string(body), e.Conn.Hello(), e.Conn.TLS() != nil,
				e.Conn.AuthIdentity(), e.Received().String()})
			if strings.Contains(string(body), "reject me") {
				return smtp.NewError(554, smtp.EnhancedCode{5, 7, 1}, "Rejected by policy")
			}
			return nil
		})
		c := serve(t, m, &Server{Handler: fn}).dial()
		lmtp := ""
		if m == modeLMTP {
			lmtp = "S: 250 2.0.0\n"
		}
		c.run(`
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com> BODY=8BITMIME
			S: 250 2.1.0
			C: RCPT TO:<b@example.com> NOTIFY=FAILURE
			S: 250 2.1.5
			C: RCPT TO:<c@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: Subject: one
			C: .
			S: 250 2.0.0
			` + lmtp + `
			C: MAIL FROM:<>
			S: 250 2.1.0
			C: RCPT TO:<d@example.com>
			S: 250 2.1.5
			C: BDAT 14 LAST
			W: Subject: two\r\n
			S: 250 2.0.0
			C: MAIL FROM:<e@example.com>
			S: 250 2.1.0
			C: RCPT TO:<f@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: reject me
			C: .
			S: 554 5.7.1 Rejected by policy
			C: QUIT
			S: 221
			S: EOF
		`)
		mu.Lock()
		defer mu.Unlock()
		if len(envs) != 3 {
			t.Fatalf("%d envelopes", len(envs))
		}
		isTLS := m == modeTLS || m == modeStartTLS
		e := envs[0]
		equal(t, "from", e.from, smtp.Address{Local: "a", Domain: "example.com"})
		equal(t, "body type", e.opts.Body, smtp.Body8BitMIME)
		want := []Recipient{
			{smtp.Address{Local: "b", Domain: "example.com"}, smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.NotifyFailure}}},
			{smtp.Address{Local: "c", Domain: "example.com"}, smtp.RcptOptions{}},
		}
		if !reflect.DeepEqual(e.to, want) {
			t.Errorf("recipients %+v, want %+v", e.to, want)
		}
		equal(t, "body", e.body, "Subject: one\r\n")
		equal(t, "HELO", e.helo, "client.test")
		equal(t, "TLS", e.tls, isTLS)
		equal(t, "identity", e.identity, "")
		if strings.Contains(e.received, "for <") {
			t.Errorf("Received names one of several recipients: %q", e.received)
		}

		e = envs[1]
		equal(t, "from", e.from, smtp.Address{})
		equal(t, "body type", e.opts.Body, smtp.BodyType(""))
		if len(e.to) != 1 || e.to[0].Address.Local != "d" {
			t.Errorf("second envelope's recipients: %+v", e.to)
		}
		equal(t, "body", e.body, "Subject: two\r\n")
		if !strings.Contains(e.received, "for <d@example.com>") {
			t.Errorf("Received lacks its one recipient: %q", e.received)
		}
	})
}

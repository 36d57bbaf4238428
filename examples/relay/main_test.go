package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
	"github.com/smtpkit/smtpkit/smtptest"
)

func TestRelayForwards(t *testing.T) {
	smarthost := &smtptest.Recorder{}
	next := smtptest.NewServer(t, smarthost)
	var log bytes.Buffer
	relaySrv := smtptest.NewServer(t, relay(next.Addr, "relay.test", &log))

	body := "Subject: via relay\r\n\r\nHello.\r\n.dot line\r\n"
	to := []string{"bob@example.com", "carol@example.com"}
	if err := relaySrv.SendMail(t, "alice@example.org", to, []byte(body)); err != nil {
		t.Fatalf("SendMail: %v", err)
	}

	msgs := smarthost.Messages()
	if len(msgs) != 1 {
		t.Fatalf("smarthost got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From.String() != "alice@example.org" || len(m.To) != 2 || m.To[1].Address.String() != "carol@example.com" {
		t.Errorf("envelope from %v to %v", m.From, m.Addresses())
	}
	if !bytes.HasPrefix(m.Data, []byte("Received: from localhost")) || !bytes.HasSuffix(m.Data, []byte(body)) {
		t.Errorf("forwarded body:\n%s", m.Data)
	}
	if m.Conn.Hello != "relay.test" {
		t.Errorf("relay said EHLO %q", m.Conn.Hello)
	}
	if want := "from=<alice@example.org> to=[bob@example.com carol@example.com] client=127.0.0.1\n"; log.String() != want {
		t.Errorf("printed %q, want %q", log.String(), want)
	}
}

func TestRelayPassesOnRefusals(t *testing.T) {
	smarthost := &smtptest.Recorder{
		RcptFunc: func(_ context.Context, to smtp.Address, _ *smtp.RcptOptions) error {
			switch to.Local {
			case "nobody":
				return smtp.NoSuchUser()
			case "later":
				return smtp.Defer("Greylisted")
			}
			return nil
		},
	}
	next := smtptest.NewServer(t, smarthost)
	relaySrv := smtptest.NewServer(t, relay(next.Addr, "relay.test", new(bytes.Buffer)))

	for _, tt := range []struct {
		to   string
		code int
	}{
		{"nobody@example.com", 554}, // permanent stays permanent
		{"later@example.com", 451},  // temporary stays temporary
	} {
		err := relaySrv.SendMail(t, "alice@example.org", []string{tt.to}, []byte("x\r\n"))
		var se *smtp.Error
		if !errors.As(err, &se) || se.Code != tt.code {
			t.Errorf("to %s: got %v, want %d", tt.to, err, tt.code)
		}
		if strings.Contains(se.Error(), "No such user") {
			t.Errorf("to %s: the smarthost's text leaked into the reply: %v", tt.to, se)
		}
	}
	if n := len(smarthost.Messages()); n != 0 {
		t.Errorf("smarthost accepted %d messages", n)
	}
}

func TestRelaySmarthostDown(t *testing.T) {
	down := smtptest.NewServer(t, &smtptest.Recorder{})
	addr := down.Addr
	down.Close()
	relaySrv := smtptest.NewServer(t, relay(addr, "relay.test", new(bytes.Buffer)))

	c := relaySrv.Dial(t)
	c.Expect(220)
	c.Hello("client.example")
	c.Cmd("MAIL FROM:<alice@example.org>", 250)
	c.Cmd("RCPT TO:<bob@example.com>", 250)
	r := c.Data("Subject: x\r\n\r\nx\r\n", 451)
	if r.Enhanced != (smtp.EnhancedCode{4, 3, 0}) {
		t.Errorf("got %s, want 451 4.3.0", r)
	}
	c.Cmd("QUIT", 221)
}

package server

import (
	"context"
	"io"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

func TestLMTP(t *testing.T) {
	t.Parallel()
	// perRecipient gives the second recipient a 550 and leaves the third
	// to LMTPData's own result, after reading the body.
	perRecipient := func(ctx context.Context, r io.Reader, st *LMTPStatus) error {
		body, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		rc := st.Recipients()
		if len(rc) != 3 || rc[0].Local != "b" || rc[1].Local != "c" || rc[2].Local != "d" {
			return smtp.NewError(554, smtp.EnhancedCode{5, 0, 0}, "Wrong recipients")
		}
		if string(body) != "Subject: x\r\n" {
			return smtp.NewError(554, smtp.EnhancedCode{5, 0, 0}, "Wrong body")
		}
		st.Set(1, smtp.NoSuchUser())
		st.Set(0, nil)
		st.Set(7, nil) // out of range: ignored
		return smtp.NewError(452, smtp.EnhancedCode{4, 2, 2}, "Mailbox full")
	}
	// early decides without reading; the body must still arrive whole
	// before the replies, since one recipient takes it.
	early := func(ctx context.Context, r io.Reader, st *LMTPStatus) error {
		st.Set(0, nil)
		st.Set(1, smtp.NoSuchUser())
		return nil
	}
	const threeRcpts = `
		C: LHLO client.test
		S: 250-mx.test
		C: MAIL FROM:<a@example.com>
		C: RCPT TO:<b@example.com>
		C: RCPT TO:<reject@example.com>
		C: RCPT TO:<c@example.com>
		C: RCPT TO:<d@example.com>
		S: 250 2.1.0
		S: 250 2.1.5
		S: 550 5.1.1
		S: 250 2.1.5
		S: 250 2.1.5
	`
	runScripts(t, []scriptCase{{
		name:  "one reply per accepted recipient after DATA",
		modes: []mode{modeLMTP},
		script: threeRcpts + `
			C: DATA
			S: 354
			C: Subject: x
			C: .
			S: 250 2.0.0
			S: 250 2.0.0
			S: 250 2.0.0
			C: NOOP
			S: 250 2.0.0 OK
		`,
		check: func(t *testing.T, m mode, b *backend) {
			msgs := b.Messages()
			if len(msgs) != 1 || len(msgs[0].rcpts) != 3 {
				t.Fatalf("messages: %+v", msgs)
			}
		},
	}, {
		name:  "one reply per accepted recipient after BDAT LAST",
		modes: []mode{modeLMTP},
		script: threeRcpts + `
			C: BDAT 12
			W: Subject: x\r\n
			S: 250 2.0.0 12 octets received
			C: BDAT 0 LAST
			S: 250 2.0.0
			S: 250 2.0.0
			S: 250 2.0.0
			C: NOOP
			S: 250 2.0.0 OK
		`,
	}, {
		name:    "LMTPSession statuses in order",
		modes:   []mode{modeLMTP},
		backend: func(b *backend) { b.onLMTP = perRecipient },
		script: threeRcpts + `
			C: DATA
			S: 354
			C: Subject: x
			C: .
			S: 250 2.0.0 OK
			S: 550 5.1.1 No such user here
			S: 452 4.2.2 Mailbox full
			C: MAIL FROM:<a@example.com>
			C: RCPT TO:<b@example.com>
			C: RCPT TO:<c@example.com>
			C: RCPT TO:<d@example.com>
			C: BDAT 12 LAST
			W: Subject: x\r\n
			S: 250 2.1.0
			S: 250 2.1.5
			S: 250 2.1.5
			S: 250 2.1.5
			S: 250 2.0.0 OK
			S: 550 5.1.1
			S: 452 4.2.2
			C: NOOP
			S: 250 2.0.0 OK
		`,
	}, {
		name:    "an early split verdict waits for the whole body",
		modes:   []mode{modeLMTP},
		backend: func(b *backend) { b.onLMTP = early },
		script: `
			C: LHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: RCPT TO:<c@example.com>
			S: 250 2.1.5
			C: BDAT 5
			W: hello
			S: 250 2.0.0 5 octets received
			C: BDAT 5 LAST
			W: world
			S: 250 2.0.0 OK
			S: 550 5.1.1
			C: DATA
			S: 503 5.5.1
		`,
	}, {
		name:   "a body error goes to every recipient",
		modes:  []mode{modeLMTP},
		server: func(s *Server) { s.MaxMessageBytes = 5 },
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
			C: too long for five bytes
			C: .
			S: 552 5.3.4
			S: 552 5.3.4
			C: NOOP
			S: 250 2.0.0 OK
		`,
	}})
}

func TestLMTPStatusStandalone(t *testing.T) {
	st := NewLMTPStatus([]smtp.Address{{Local: "a", Domain: "x.test"}, {Local: "b", Domain: "x.test"}})
	st.Set(1, smtp.NoSuchUser())
	if _, ok := st.Result(0); ok {
		t.Error("recipient 0 reported as set")
	}
	if err, ok := st.Result(1); !ok || err == nil {
		t.Errorf("recipient 1: %v %v", err, ok)
	}
	if _, ok := st.Result(5); ok {
		t.Error("out of range reported as set")
	}
	if len(st.Recipients()) != 2 {
		t.Error("recipients lost")
	}
}

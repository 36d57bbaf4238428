package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
	"github.com/smtpkit/smtpkit/smtptest"
)

// delivered collects what the filter passes on.
type delivered struct {
	mu     sync.Mutex
	bodies []string
}

func (d *delivered) next(ctx context.Context, e *server.Envelope) error {
	b, err := io.ReadAll(e.Data)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.bodies = append(d.bodies, string(b))
	d.mu.Unlock()
	return nil
}

func start(t *testing.T) (*smtptest.Server, *delivered, string) {
	t.Helper()
	d := &delivered{}
	spool := t.TempDir()
	f := &Filter{
		Threshold: 5,
		Words:     defaultWords(),
		Next:      d.next,
		SpoolDir:  spool,
		Logger:    slog.New(slog.DiscardHandler),
	}
	return smtptest.NewServer(t, f), d, spool
}

const ham = "Subject: Lunch on Friday\r\nMessage-ID: <1@example.org>\r\n\r\nNoon at the usual place?\r\n"

func TestSpamAndHam(t *testing.T) {
	tests := []struct {
		name string
		body string
		code int
	}{
		{"ham", ham, 250},
		{"ham without Message-ID", "Subject: hi\r\n\r\nOne winner today.\r\n", 250}, // 1 + 1
		{"subject words", "Subject: WINNER of the LOTTERY\r\n\r\nhello\r\n", 550},   // 2 + 2 + 1
		{"body words", "Message-ID: <2@x>\r\n\r\nClick here. Click HERE. Free money, act now!\r\nbitcoin\r\n", 550},
		{"upstream flag", "X-Spam-Flag: YES\r\nMessage-ID: <3@x>\r\n\r\nplain\r\n", 550},
		{"headers only", "Subject: winner winner\r\n", 550}, // 4, and no Message-ID at the end
	}
	srv, d, spool := start(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := srv.Dial(t)
			c.Expect(220)
			c.Hello("client.example")
			c.Cmd("MAIL FROM:<a@example.org>", 250)
			c.Cmd("RCPT TO:<b@example.com>", 250)
			r := c.Data(tt.body, tt.code)
			if tt.code == 550 && r.Enhanced != (smtp.EnhancedCode{5, 7, 1}) {
				t.Errorf("got %s, want 550 5.7.1", r)
			}
			c.Cmd("QUIT", 221)
		})
	}
	want := []string{tests[0].body, tests[1].body}
	if len(d.bodies) != 2 || d.bodies[0] != want[0] || d.bodies[1] != want[1] {
		t.Errorf("delivered %q, want %q", d.bodies, want)
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Errorf("spool files left: %v", left)
	}
}

// A large ham is streamed through whole; a large spam is refused at its
// first lines, and the session goes on.
func TestLargeMessages(t *testing.T) {
	srv, d, _ := start(t)
	line := strings.Repeat("lorem ipsum ", 8) + "\r\n"
	bulk := strings.Repeat(line, 1<<20/len(line))
	c := srv.Dial(t)
	c.Expect(220)
	c.Hello("client.example")

	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.com>", 250)
	c.Data(ham+bulk, 250)

	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.com>", 250)
	c.Data("X-Spam-Flag: YES\r\n\r\n"+bulk, 550)

	c.Cmd("NOOP", 250)
	c.Cmd("QUIT", 221)
	if len(d.bodies) != 1 || len(d.bodies[0]) != len(ham)+len(bulk) {
		t.Errorf("delivered %d messages", len(d.bodies))
	}
}

// The score does not depend on how the body is cut into writes.
func TestScorerChunking(t *testing.T) {
	body := "Subject: free money\r\nMessage-ID: <x>\r\n\r\nA winner\r\n" + strings.Repeat("y", maxScoredLine+10) + "\r\nviagra\r\n"
	whole := newScorer(defaultWords(), 100)
	whole.Write([]byte(body))
	whole.finish()
	bytewise := newScorer(defaultWords(), 100)
	for i := range len(body) {
		bytewise.Write([]byte{body[i]})
	}
	bytewise.finish()
	if whole.score != 4 || bytewise.score != whole.score {
		t.Errorf("scores %d and %d (%v, %v), want 4", whole.score, bytewise.score, whole.reasons, bytewise.reasons)
	}
	stop := newScorer(defaultWords(), 3)
	n, err := stop.Write([]byte("Subject: lottery lottery\r\nmore headers\r\n"))
	if err != errSpam || n != len("Subject: lottery lottery\r\n") {
		t.Errorf("Write = %d, %v; want to stop after the first line", n, err)
	}
}

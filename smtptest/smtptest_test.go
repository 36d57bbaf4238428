package smtptest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"

	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
)

// One transaction in every transport, checked on both sides.
func TestModes(t *testing.T) {
	for _, m := range Modes() {
		t.Run(m.String(), func(t *testing.T) {
			rec := &Recorder{}
			srv := NewServer(t, rec, WithMode(m))
			c := srv.Dial(t)
			c.Expect(220)
			ehlo := c.Hello("client.example")
			if _, ok := ehlo.Extension("STARTTLS"); ok {
				t.Errorf("STARTTLS still offered after TLS: %s", ehlo)
			}
			c.Cmd("MAIL FROM:<alice@example.org> SIZE=100", 250)
			c.Cmd("RCPT TO:<bob@example.com>", 250)
			body := "Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n"
			c.Data(body, 250)
			c.Cmd("QUIT", 221)
			c.ExpectClosed()
			srv.Close()

			wantTLS := m == ModeSTARTTLS || m == ModeImplicitTLS
			if got := c.ConnectionState() != nil; got != wantTLS {
				t.Errorf("client TLS = %v, want %v", got, wantTLS)
			}
			msgs := rec.Messages()
			if len(msgs) != 1 {
				t.Fatalf("got %d messages, want 1", len(msgs))
			}
			msg := msgs[0]
			if string(msg.Data) != body {
				t.Errorf("body = %q, want %q", msg.Data, body)
			}
			if msg.From.String() != "alice@example.org" || msg.MailOptions.Size != 100 {
				t.Errorf("from = %v %+v", msg.From, msg.MailOptions)
			}
			if got := msg.Addresses(); len(got) != 1 || got[0].String() != "bob@example.com" {
				t.Errorf("to = %v", got)
			}
			if (msg.Conn.TLS != nil) != wantTLS || msg.Conn.Hello != "client.example" || !msg.Conn.ESMTP {
				t.Errorf("conn = %+v", msg.Conn)
			}
			sessions := rec.Sessions()
			if len(sessions) != 1 {
				t.Fatalf("got %d sessions", len(sessions))
			}
			want := []string{"connect", "hello client.example"}
			if m == ModeSTARTTLS {
				want = append(want, "hello client.example")
			}
			want = append(want, "mail <alice@example.org>", "rcpt <bob@example.com>",
				"data "+strconv.Itoa(len(body)), "reset", "close")
			if got := sessions[0].Log(); !slices.Equal(got, want) {
				t.Errorf("log:\n got %q\nwant %q", got, want)
			}
			if !sessions[0].Closed || sessions[0].CloseErr != nil {
				t.Errorf("closed = %v, %v", sessions[0].Closed, sessions[0].CloseErr)
			}
		})
	}
}

func TestSendMailReturnsRefusal(t *testing.T) {
	rec := &Recorder{
		RcptFunc: func(_ context.Context, to smtp.Address, _ *smtp.RcptOptions) error {
			if to.Local == "nobody" {
				return smtp.NoSuchUser()
			}
			return nil
		},
	}
	srv := NewServer(t, rec)
	if err := SendMail(t, srv.Addr, "a@example.org", []string{"b@example.com"}, []byte("x\r\n")); err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	err := SendMail(t, srv.Addr, "a@example.org", []string{"b@example.com", "nobody@example.com"}, []byte("x\r\n"))
	var se *smtp.Error
	if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
		t.Fatalf("SendMail: got %v, want 550 5.1.1", err)
	}
	if n := len(rec.Messages()); n != 1 {
		t.Errorf("got %d messages, want 1", n)
	}
}

// Sessions in parallel share one Recorder.
func TestRecorderConcurrent(t *testing.T) {
	rec := &Recorder{}
	srv := NewServer(t, rec)
	const n = 8
	t.Run("group", func(t *testing.T) {
		for i := range n {
			t.Run(strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				msg := []byte("Subject: " + strconv.Itoa(i) + "\r\n\r\nx\r\n")
				if err := srv.SendMail(t, "a@example.org", []string{"b@example.com"}, msg); err != nil {
					t.Error(err)
				}
				rec.Sessions() // read while others write
			})
		}
	})
	srv.Close()
	if got := len(rec.Messages()); got != n {
		t.Errorf("got %d messages, want %d", got, n)
	}
	for _, s := range rec.Sessions() {
		if !s.Closed {
			t.Errorf("session %s not closed", s.Conn.ID)
		}
	}
}

func TestConnectRefused(t *testing.T) {
	refusal := smtp.NewError(554, smtp.EnhancedCode{5, 7, 1}, "Go away")
	rec := &Recorder{ConnectFunc: func(context.Context, *server.Conn) error { return refusal }}
	srv := NewServer(t, rec)
	c := srv.Dial(t)
	r := c.Expect(554)
	if r.Enhanced != (smtp.EnhancedCode{}) {
		// Before EHLO there are no enhanced codes (RFC 2034 3).
		t.Logf("greeting carries %s", r.Enhanced)
	}
	c.Cmd("EHLO x", 503)
	c.Cmd("QUIT", 221)
	srv.Close()
	s := rec.Sessions()
	if len(s) != 1 || !s[0].Closed || s[0].CloseErr != refusal {
		t.Fatalf("sessions = %+v", s)
	}
}

func TestPipeliningAndBDAT(t *testing.T) {
	rec := &Recorder{}
	srv := NewServer(t, rec)
	c := srv.Dial(t)
	c.Expect(220)
	c.Hello("client.example")
	c.Write("MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
	c.Expect(250)
	c.Expect(250)
	c.Expect(250)
	c.Expect(354)
	c.Write("one\r\n.\r\n")
	c.Expect(250)
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.com>", 250)
	c.BDAT("Subject: chunks\r\n\r\n", false, 250)
	c.BDAT("two\r\n", true, 250)
	c.Cmd("QUIT", 221)
	msgs := rec.Messages()
	if len(msgs) != 2 || string(msgs[0].Data) != "one\r\n" || string(msgs[1].Data) != "Subject: chunks\r\n\r\ntwo\r\n" {
		t.Fatalf("messages = %+v", msgs)
	}
	if len(msgs[0].To) != 2 {
		t.Errorf("first message to %v", msgs[0].Addresses())
	}
}

// A bare LF before the final dot must not end the message (SMTP smuggling).
func TestBareLFRecorded(t *testing.T) {
	rec := &Recorder{}
	srv := NewServer(t, rec)
	c := srv.Dial(t)
	c.Expect(220)
	c.Hello("client.example")
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.com>", 250)
	c.Cmd("DATA", 354)
	c.Write("hi\n.\nMAIL FROM:<evil@example.org>\r\n.\r\n")
	c.Expect(550)
	c.ExpectClosed()
	srv.Close()
	if n := len(rec.Messages()); n != 0 {
		t.Errorf("accepted %d messages", n)
	}
	s := rec.Sessions()[0]
	if len(s.Messages) != 1 || s.Messages[0].Err == nil || s.Messages[0].Accepted() {
		t.Errorf("recorded %+v", s.Messages)
	}
}

func TestUnstartedServerConfig(t *testing.T) {
	srv := NewUnstartedServer(t, &Recorder{})
	srv.Config.MaxRecipients = 1
	srv.Config.Hostname = "mx.test"
	srv.Start()
	c := srv.Dial(t)
	if r := c.Expect(220); !strings.HasPrefix(r.Text(), "mx.test ") {
		t.Errorf("greeting %s", r)
	}
	c.Hello("client.example")
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.com>", 250)
	r := c.Cmd("RCPT TO:<c@example.com>", 452)
	if r.Enhanced != (smtp.EnhancedCode{4, 5, 3}) {
		t.Errorf("got %s, want 4.5.3", r)
	}
}

// Close says 421 to idle sessions and returns once their Close hooks ran.
func TestCloseWaitsForSessions(t *testing.T) {
	rec := &Recorder{}
	srv := NewServer(t, rec)
	c := srv.Dial(t)
	c.Expect(220)
	c.Hello("client.example")
	closed := make(chan struct{})
	go func() {
		srv.Close()
		close(closed)
	}()
	c.Expect(421)
	c.ExpectClosed()
	<-closed
	s := rec.Sessions()
	if len(s) != 1 || !s[0].Closed || s[0].CloseErr == nil {
		t.Fatalf("sessions = %+v", s)
	}
}

func TestStartTLSByHand(t *testing.T) {
	srv := NewUnstartedServer(t, &Recorder{})
	srv.StartTLS()
	c := Dial(t, srv.Addr)
	c.Expect(220)
	r := c.Hello("client.example")
	if _, ok := r.Extension("starttls"); !ok {
		t.Fatalf("no STARTTLS in %s", r)
	}
	c.StartTLS(srv.ClientTLSConfig())
	if c.ConnectionState() == nil {
		t.Fatal("no TLS after StartTLS")
	}
	c.Cmd("MAIL FROM:<a@example.org>", 503) // RFC 3207 4.2: EHLO again first
	c.Hello("client.example")
	c.Cmd("QUIT", 221)
	if srv.Certificate().Subject.CommonName != "localhost" {
		t.Errorf("certificate %v", srv.Certificate().Subject)
	}
}

// fullSession implements every optional interface.
type fullSession struct {
	mu    *sync.Mutex
	seen  *[]string
	lmtp  bool
	rcpts int
}

func (s *fullSession) note(v string) { s.mu.Lock(); *s.seen = append(*s.seen, v); s.mu.Unlock() }

func (s *fullSession) Hello(_ context.Context, name string) error {
	if name == "bad.example" {
		return smtp.NewError(550, smtp.EnhancedCode{5, 7, 1}, "No")
	}
	s.note("hello " + name)
	return nil
}
func (s *fullSession) Mail(context.Context, smtp.Address, *smtp.MailOptions) error { return nil }
func (s *fullSession) Rcpt(context.Context, smtp.Address, *smtp.RcptOptions) error {
	s.rcpts++
	return nil
}
func (s *fullSession) Data(_ context.Context, r io.Reader) error {
	// Read only the first bytes: the recorder must still keep all.
	buf := make([]byte, 4)
	io.ReadFull(r, buf)
	s.note("data " + string(buf))
	return nil
}
func (s *fullSession) Reset(context.Context)        {}
func (s *fullSession) Close(context.Context, error) { s.note("close") }
func (s *fullSession) AuthPassword(_ context.Context, _, user, pass string) error {
	if user == "u" && pass == "p" {
		return nil
	}
	return smtp.NewError(535, smtp.EnhancedCode{5, 7, 8}, "Bad credentials")
}
func (s *fullSession) AuthMechanisms() []string { return []string{"ANONYMOUS"} }
func (s *fullSession) AuthSASL(_ context.Context, mech string) (sasl.Server, func() string, error) {
	return nil, nil, errors.New("unsupported")
}
func (s *fullSession) Verify(_ context.Context, arg string) (string, error) {
	return "<" + arg + "@example.com>", nil
}
func (s *fullSession) Expand(context.Context, string) ([]string, error) {
	return nil, smtp.Reject("No")
}
func (s *fullSession) LMTPData(_ context.Context, r io.Reader, st *server.LMTPStatus) error {
	io.Copy(io.Discard, r)
	for i := range st.Recipients() {
		if i%2 == 1 {
			st.Set(i, smtp.NoSuchUser())
		}
	}
	return nil
}

type fullHandler struct {
	mu   sync.Mutex
	seen []string
}

func (h *fullHandler) NewSession(context.Context, *server.Conn) (server.Session, error) {
	return &fullSession{mu: &h.mu, seen: &h.seen}, nil
}

// plainSession has only the required methods.
type plainSession struct{}

func (plainSession) Mail(context.Context, smtp.Address, *smtp.MailOptions) error { return nil }
func (plainSession) Rcpt(context.Context, smtp.Address, *smtp.RcptOptions) error { return nil }
func (plainSession) Data(context.Context, io.Reader) error                       { return nil }
func (plainSession) Reset(context.Context)                                       {}
func (plainSession) Close(context.Context, error)                                {}

type plainHandler struct{}

func (plainHandler) NewSession(context.Context, *server.Conn) (server.Session, error) {
	return plainSession{}, nil
}

func TestRecorderWrapsOptionalInterfaces(t *testing.T) {
	inner := &fullHandler{}
	rec := &Recorder{Handler: inner}
	srv := NewServer(t, rec, WithConfig(func(s *server.Server) { s.AllowInsecureAuth = true }))
	c := srv.Dial(t)
	c.Expect(220)
	c.Cmd("EHLO bad.example", 550)
	ehlo := c.Hello("client.example")
	if mechs, _ := ehlo.Extension("AUTH"); !strings.Contains(mechs, "PLAIN") {
		t.Errorf("AUTH = %q", mechs)
	}
	if r := c.Cmd("VRFY bob", 250); r.Text() != "<bob@example.com>" {
		t.Errorf("VRFY: %s", r)
	}
	c.Cmd("EXPN list", 550)
	c.Cmd("AUTH PLAIN AHUAcA==", 235) // \0u\0p
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.com>", 250)
	c.Data("0123456789\r\n", 250)
	c.Cmd("QUIT", 221)
	srv.Close()

	s := rec.Sessions()[0]
	want := []string{"connect", "hello bad.example: 550 5.7.1 No", "hello client.example", "vrfy bob",
		"expn list: 550 5.7.1 No", "auth u", "mail <a@example.org>", "rcpt <b@example.com>", "data 12", "reset", "close"}
	if got := s.Log(); !slices.Equal(got, want) {
		t.Errorf("log:\n got %q\nwant %q", got, want)
	}
	if s.Conn.AuthIdentity != "u" {
		t.Errorf("identity %q", s.Conn.AuthIdentity)
	}
	if string(s.Messages[0].Data) != "0123456789\r\n" {
		t.Errorf("recorded %q", s.Messages[0].Data)
	}
	if want := []string{"hello client.example", "data 0123", "close"}; !slices.Equal(inner.seen, want) {
		t.Errorf("inner saw %q, want %q", inner.seen, want)
	}

	// A session without the optional interfaces gets none of the powers.
	srv2 := NewServer(t, &Recorder{Handler: plainHandler{}}, WithConfig(func(s *server.Server) { s.AllowInsecureAuth = true }))
	c2 := srv2.Dial(t)
	c2.Expect(220)
	if _, ok := c2.Hello("client.example").Extension("AUTH"); ok {
		t.Error("AUTH offered for a session without PasswordSession")
	}
	c2.Cmd("VRFY bob", 252)
}

func TestLMTPPerRecipient(t *testing.T) {
	rec := &Recorder{Handler: &fullHandler{}}
	srv := NewServer(t, rec, WithMode(ModeLMTP))
	c := srv.Dial(t)
	c.Expect(220)
	c.Hello("client.example")
	c.Cmd("MAIL FROM:<a@example.org>", 250)
	c.Cmd("RCPT TO:<b@example.com>", 250)
	c.Cmd("RCPT TO:<c@example.com>", 250)
	c.Data("hi\r\n", 250)
	if r := c.Expect(550); r.Enhanced != (smtp.EnhancedCode{5, 1, 1}) {
		t.Errorf("second recipient: %s", r)
	}
	c.Cmd("QUIT", 221)
	if err := srv.SendMail(t, "a@example.org", []string{"b@example.com", "c@example.com"}, []byte("x\r\n")); err == nil {
		t.Error("LMTP SendMail: no error for the refused recipient")
	}
}

// fatalTB records a Fatalf and ends the goroutine as testing.T does.
type fatalTB struct {
	*testing.T
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runFailing runs f with a TB whose Fatalf ends f, and returns its message.
func runFailing(t *testing.T, f func(tb testing.TB)) string {
	tb := &fatalTB{T: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(tb)
	}()
	<-done
	return tb.msg
}

func TestFailureShowsTranscript(t *testing.T) {
	rec := &Recorder{RcptFunc: func(context.Context, smtp.Address, *smtp.RcptOptions) error { return smtp.NoSuchUser() }}
	srv := NewServer(t, rec)
	msg := runFailing(t, func(tb testing.TB) {
		c := srv.Dial(tb)
		c.Expect(220)
		c.Hello("client.example")
		c.Cmd("MAIL FROM:<a@example.org>", 250)
		c.Cmd("RCPT TO:<b@example.com>", 250)
		t.Error("Cmd did not fail")
	})
	for _, want := range []string{`want reply 250, got "550 5.1.1 No such user here"`, "C: RCPT TO:<b@example.com>", "S: 220 localhost ESMTP smtpkit", "S: 250-localhost greets client.example"} {
		if !strings.Contains(msg, want) {
			t.Errorf("failure message lacks %q:\n%s", want, msg)
		}
	}
}

// fakeServer answers a Client over a pipe with canned bytes.
func fakeServer(t *testing.T, script string) *Client {
	a, b := net.Pipe()
	go func() {
		io.WriteString(b, script)
		b.Close()
	}()
	return NewClient(t, a)
}

func TestReplyParsing(t *testing.T) {
	tests := []struct {
		in   string
		code int
		enh  smtp.EnhancedCode
		text string
	}{
		{"220 mx ESMTP\r\n", 220, smtp.EnhancedCode{}, "mx ESMTP"},
		{"250 2.1.0 OK\r\n", 250, smtp.EnhancedCode{2, 1, 0}, "OK"},
		{"250 2.0.0\r\n", 250, smtp.EnhancedCode{2, 0, 0}, ""},
		{"250\r\n", 250, smtp.EnhancedCode{}, ""},
		{"550-5.7.1 one\r\n550-5.7.1 two\r\n550 5.7.1 three\r\n", 550, smtp.EnhancedCode{5, 7, 1}, "one\ntwo\nthree"},
		{"250-mx greets x\r\n250-PIPELINING\r\n250 SIZE 100\r\n", 250, smtp.EnhancedCode{}, "mx greets x\nPIPELINING\nSIZE 100"},
		{"354 Start mail input\r\n", 354, smtp.EnhancedCode{}, "Start mail input"},
		{"451 5.1.1 wrong class\r\n", 451, smtp.EnhancedCode{}, "5.1.1 wrong class"},
		{"250 2.0.0.1 not a code\r\n", 250, smtp.EnhancedCode{}, "2.0.0.1 not a code"},
		{"452 4.5.300 three digits\r\n", 452, smtp.EnhancedCode{4, 5, 300}, "three digits"},
	}
	for _, tt := range tests {
		c := fakeServer(t, tt.in)
		r := c.ReadReply()
		if r.Code != tt.code || r.Enhanced != tt.enh || r.Text() != tt.text {
			t.Errorf("%q: got %d %v %q", tt.in, r.Code, r.Enhanced, r.Text())
		}
		if got := r.String(); got != strings.ReplaceAll(strings.TrimSuffix(tt.in, "\r\n"), "\r\n", "\n") {
			t.Errorf("%q: String() = %q", tt.in, got)
		}
	}
	if _, ok := (Reply{Code: 250, Lines: []string{"mx", "SIZE 10", "8BITMIME"}}).Extension("size"); !ok {
		t.Error("Extension(size) not found")
	}

	for _, bad := range []string{"25\r\n", "250 ok\n", "250-a\r\n251 b\r\n", "250xok\r\n", "250-a\r\n"} {
		msg := runFailing(t, func(tb testing.TB) {
			a, b := net.Pipe()
			go func() { io.WriteString(b, bad); b.Close() }()
			NewClient(tb, a).ReadReply()
			t.Errorf("%q: no failure", bad)
		})
		if !strings.Contains(msg, "reading reply") {
			t.Errorf("%q: failure %q", bad, msg)
		}
	}
}

func TestDotStuff(t *testing.T) {
	for in, want := range map[string]string{
		"":                 ".\r\n",
		"a":                "a\r\n.\r\n",
		".\r\n":            "..\r\n.\r\n",
		"a\r\n.b\r\n..c":   "a\r\n..b\r\n...c\r\n.\r\n",
		"a\n.b\r\n":        "a\n.b\r\n.\r\n", // bare LF does not start a line
		"x\r\n.\r\ny\r\n":  "x\r\n..\r\ny\r\n.\r\n",
		"\r\n.\r\n\r\n.\r": "\r\n..\r\n\r\n..\r\r\n.\r\n",
	} {
		if got := dotStuff(in); got != want {
			t.Errorf("dotStuff(%q) = %q, want %q", in, got, want)
		}
	}
}

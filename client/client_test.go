package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"

	"github.com/smtpkit/smtpkit/internal/testcert"
	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
)

// recorder is a session that keeps what it was given and refuses
// recipients whose local part is "bad".
type recorder struct {
	mu    sync.Mutex
	from  smtp.Address
	mopts smtp.MailOptions
	rcpts []server.Recipient
	body  []byte
	user  string
}

func (r *recorder) NewSession(ctx context.Context, c *server.Conn) (server.Session, error) {
	return r, nil
}

func (r *recorder) Mail(ctx context.Context, from smtp.Address, o *smtp.MailOptions) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.from, r.mopts, r.rcpts = from, *o, nil
	r.user = server.ConnFromContext(ctx).AuthIdentity()
	return nil
}

func (r *recorder) Rcpt(ctx context.Context, to smtp.Address, o *smtp.RcptOptions) error {
	if to.Local == "bad" {
		return smtp.NoSuchUser()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rcpts = append(r.rcpts, server.Recipient{Address: to, Options: *o})
	return nil
}

func (r *recorder) Data(ctx context.Context, rd io.Reader) error {
	b, err := io.ReadAll(rd)
	r.mu.Lock()
	r.body = b
	r.mu.Unlock()
	return err
}

func (r *recorder) LMTPData(ctx context.Context, rd io.Reader, st *server.LMTPStatus) error {
	if err := r.Data(ctx, rd); err != nil {
		return err
	}
	for i, a := range st.Recipients() {
		if a.Local == "full" {
			st.Set(i, smtp.NewError(452, smtp.EnhancedCode{4, 2, 2}, "Mailbox full"))
		}
	}
	return nil
}

func (r *recorder) AuthPassword(ctx context.Context, id, user, pass string) error {
	if user == "alice" && pass == "secret" {
		return nil
	}
	return server.ErrAuthFailed
}

func (r *recorder) Reset(ctx context.Context)            {}
func (r *recorder) Close(ctx context.Context, err error) {}

func start(t *testing.T, srv *server.Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Hostname = "mx.test"
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func addr(s string) smtp.Address {
	a, err := smtp.ParseAddress(s)
	if err != nil {
		panic(err)
	}
	return a
}

func TestSend(t *testing.T) {
	for _, tc := range []struct {
		name    string
		disable server.Extension
		lmtp    bool
	}{
		{"pipelining", 0, false},
		{"no pipelining", server.ExtPipelining, false},
		{"lmtp", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			a := start(t, &server.Server{Handler: rec, DisableExtensions: tc.disable, LMTP: tc.lmtp})
			ctx := context.Background()
			c, err := Dial(ctx, a, Options{LocalName: "client.test", LMTP: tc.lmtp})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			body := "Subject: x\r\n\r\n.leading dot\r\nbare\nlf\r\n"
			rcpts := []Recipient{
				{Address: addr("ok@example.org"), Options: smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.NotifyFailure, smtp.NotifyDelay}, OriginalRecipientType: "rfc822", OriginalRecipient: "orig+x@example.org"}},
				{Address: addr("bad@example.org")},
				{Address: addr("full@example.org")},
			}
			res, err := c.Send(ctx, addr("a@example.com"), &smtp.MailOptions{Body: smtp.Body8BitMIME, Return: smtp.ReturnHeaders, EnvelopeID: "id 1"}, rcpts, strings.NewReader(body), int64(len(body)))
			if err != nil {
				t.Fatal(err)
			}
			var se *smtp.Error
			if !errors.As(res.Rcpt[1], &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
				t.Errorf("bad recipient: %v", res.Rcpt[1])
			}
			if res.Rcpt[0] != nil {
				t.Errorf("ok recipient: %v", res.Rcpt[0])
			}
			if tc.lmtp {
				if !errors.As(res.Rcpt[2], &se) || se.Code != 452 {
					t.Errorf("LMTP per-recipient status: %v", res.Rcpt[2])
				}
			} else if res.Rcpt[2] != nil {
				t.Errorf("full recipient over SMTP: %v", res.Rcpt[2])
			}
			want := "Subject: x\r\n\r\n.leading dot\r\nbare\r\nlf\r\n"
			if string(rec.body) != want {
				t.Errorf("body %q, want %q", rec.body, want)
			}
			if rec.mopts.Return != smtp.ReturnHeaders || rec.mopts.EnvelopeID != "id 1" || rec.mopts.Size != int64(len(body)) || rec.mopts.Body != smtp.Body8BitMIME {
				t.Errorf("mail options not passed on: %+v", rec.mopts)
			}
			if o := rec.rcpts[0].Options; o.OriginalRecipient != "orig+x@example.org" || len(o.Notify) != 2 {
				t.Errorf("rcpt options not passed on: %+v", o)
			}
			// The connection is reusable.
			res, err = c.Send(ctx, smtp.Address{}, nil, rcpts[:1], strings.NewReader("x"), 0)
			if err != nil || res.Delivered() != 1 || string(rec.body) != "x\r\n" {
				t.Fatalf("second message: %v %+v %q", err, res, rec.body)
			}
			if err := c.Quit(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestStartTLSAndAuth(t *testing.T) {
	rec := &recorder{}
	cert, err := testcert.New(testcert.Options{Names: []string{"mx.test", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	a := start(t, &server.Server{Handler: rec, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert.TLSCertificate()}}})
	ctx := context.Background()
	c, err := Dial(ctx, a, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before TLS")
	}
	if err := c.StartTLS(ctx, &tls.Config{InsecureSkipVerify: true}); err != nil {
		t.Fatal(err)
	}
	if !c.TLS() {
		t.Fatal("not TLS after StartTLS")
	}
	err = c.Auth(ctx, sasl.NewPlainClient("", "alice", "wrong"))
	var se *smtp.Error
	if !errors.As(err, &se) || se.Code != 535 {
		t.Fatalf("wrong password: %v", err)
	}
	if err := c.Auth(ctx, sasl.NewLoginClient("alice", "secret")); err != nil {
		t.Fatal(err)
	}
	res, err := c.Send(ctx, addr("alice@example.com"), nil, []Recipient{{Address: addr("b@example.org")}}, bytes.NewReader([]byte("hi\r\n")), 0)
	if err != nil || res.Delivered() != 1 {
		t.Fatalf("send: %v %+v", err, res)
	}
	if rec.user != "alice" {
		t.Errorf("auth identity %q", rec.user)
	}
}

func TestSenderRefused(t *testing.T) {
	srv := &server.Server{Handler: server.EnvelopeFunc(func(ctx context.Context, e *server.Envelope) error { return nil })}
	a := start(t, srv)
	ctx := context.Background()
	c, err := Dial(ctx, a, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// SMTPUTF8 is advertised; BINARYMIME too, so a UTF-8 sender passes.
	res, err := c.Send(ctx, addr("ünï@example.com"), &smtp.MailOptions{UTF8: true}, []Recipient{{Address: addr("b@example.org")}}, strings.NewReader("x"), 0)
	if err != nil || res.Delivered() != 1 {
		t.Fatalf("utf8: %v %+v", err, res)
	}
	// A non-ASCII sender without SMTPUTF8 is refused by the server: 553.
	res, err = c.Send(ctx, addr("ünï@example.com"), nil, []Recipient{{Address: addr("b@example.org")}, {Address: addr("c@example.org")}}, strings.NewReader("x"), 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range res.Rcpt {
		var se *smtp.Error
		if !errors.As(e, &se) || se.Code != 553 {
			t.Errorf("rcpt %d: %v", i, e)
		}
	}
	// And the connection is still in step.
	if err := c.Noop(ctx); err != nil {
		t.Fatal(err)
	}
}

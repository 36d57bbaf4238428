package smtptest_test

import (
	"context"
	"fmt"
	"io"

	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
	"github.com/smtpkit/smtpkit/smtptest"
)

// A Recorder accepts everything and keeps what it received. In a test,
// pass t instead of nil: the server and client are then closed by
// t.Cleanup and failures fail the test.
func Example() {
	rec := &smtptest.Recorder{}
	srv := smtptest.NewServer(nil, rec)
	defer srv.Close()

	msg := []byte("Subject: hello\r\n\r\nHi Bob.\r\n")
	err := srv.SendMail(nil, "alice@example.org", []string{"bob@example.com"}, msg)
	fmt.Println("error:", err)

	for _, m := range rec.Messages() {
		fmt.Printf("from %s to %v: %q\n", m.From.Path(), m.Addresses(), m.Data)
	}
	// Output:
	// error: <nil>
	// from <alice@example.org> to [bob@example.com]: "Subject: hello\r\n\r\nHi Bob.\r\n"
}

// A scripted Client checks each reply; a Recorder's RcptFunc injects a
// rejection.
func ExampleClient() {
	rec := &smtptest.Recorder{
		RcptFunc: func(ctx context.Context, to smtp.Address, opts *smtp.RcptOptions) error {
			if to.Domain != "example.com" {
				return smtp.NewError(550, smtp.EnhancedCode{5, 7, 1}, "Relaying denied")
			}
			return nil
		},
	}
	srv := smtptest.NewServer(nil, rec)
	defer srv.Close()

	c := srv.Dial(nil)
	defer c.Close()
	fmt.Println(c.Expect(220))
	ehlo := c.Hello("client.example")
	_, pipelining := ehlo.Extension("PIPELINING")
	fmt.Println("pipelining:", pipelining)
	fmt.Println(c.Cmd("MAIL FROM:<alice@example.org>", 250))
	fmt.Println(c.Cmd("RCPT TO:<carol@elsewhere.example>", 550))
	fmt.Println(c.Cmd("RCPT TO:<bob@example.com>", 250))
	r := c.Data("Subject: hi\r\n\r\n.leading dot\r\n", 250)
	fmt.Println(r.Code, r.Enhanced)
	fmt.Println(c.Cmd("QUIT", 221))
	// Output:
	// 220 localhost ESMTP smtpkit
	// pipelining: true
	// 250 2.1.0 OK
	// 550 5.7.1 Relaying denied
	// 250 2.1.5 OK
	// 250 2.0.0
	// 221 2.0.0 localhost Bye
}

// Wrapping a handler records what it was asked and what it answered.
func ExampleRecorder_wrap() {
	h := server.EnvelopeFunc(func(ctx context.Context, e *server.Envelope) error {
		_, err := io.Copy(io.Discard, e.Data)
		return err
	})
	rec := &smtptest.Recorder{Handler: h}
	srv := smtptest.NewServer(nil, rec)

	msg := []byte("Subject: test\r\n\r\nbody\r\n")
	srv.SendMail(nil, "alice@example.org", []string{"bob@example.com", "carol@example.com"}, msg)
	srv.Close() // waits for the session to end

	for _, line := range rec.Sessions()[0].Log() {
		fmt.Println(line)
	}
	// Output:
	// connect
	// hello localhost
	// mail <alice@example.org>
	// rcpt <bob@example.com>
	// rcpt <carol@example.com>
	// data 23
	// reset
	// close
}

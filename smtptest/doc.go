// Package smtptest is a kit for testing SMTP hooks, as net/http/httptest is
// for HTTP handlers: a loopback Server for a server.Handler, a Recorder
// that records what every session saw, and a scripted Client that speaks
// the wire protocol line by line.
//
// A test of a handler reads like the conversation it checks:
//
//	func TestRejectsUnknownUser(t *testing.T) {
//		srv := smtptest.NewServer(t, myHandler)
//		c := srv.Dial(t)
//		c.Expect(220)
//		c.Hello("client.example")
//		c.Cmd("MAIL FROM:<alice@example.org>", 250)
//		r := c.Cmd("RCPT TO:<nobody@example.com>", 550)
//		if r.Enhanced != (smtp.EnhancedCode{5, 1, 1}) {
//			t.Errorf("RCPT: got %s, want 5.1.1", r)
//		}
//		c.Cmd("QUIT", 221)
//	}
//
// A failed expectation fails the test with the transcript of the dialogue.
// Servers and clients are closed by t.Cleanup. WithMode runs the same test
// over STARTTLS, implicit TLS or LMTP, with a self-signed certificate made
// in memory; Modes lists them all.
//
// To see what a handler of one's own received, wrap it in a Recorder:
//
//	rec := &smtptest.Recorder{Handler: myHandler}
//	srv := smtptest.NewServer(t, rec)
//	err := srv.SendMail(t, "alice@example.org", []string{"bob@example.com"}, msg)
//	...
//	srv.Close() // waits for every session to end
//	for _, s := range rec.Sessions() {
//		t.Log(s.Log())
//	}
package smtptest

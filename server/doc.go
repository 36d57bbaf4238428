// Package server is an embeddable SMTP and LMTP server (RFC 5321, RFC 2033)
// in the shape of net/http: a Server of plain fields with safe defaults, a
// Handler that opens a Session per connection, and hooks at every step of
// the dialogue, each taking a context.Context.
//
// The simple path is an EnvelopeFunc, which gets each finished message:
//
//	srv := &server.Server{
//		Addr:    "127.0.0.1:2525",
//		Handler: server.EnvelopeFunc(func(ctx context.Context, e *server.Envelope) error {
//			_, err := io.Copy(os.Stdout, e.Data)
//			return err
//		}),
//	}
//	log.Fatal(srv.ListenAndServe())
//
// The full path implements Handler and Session, and optionally
// HelloSession, PasswordSession, SASLSession, VerifySession and
// LMTPSession, to accept, reject (5xx) or defer (4xx) at the connection,
// HELO/EHLO, AUTH, MAIL, each RCPT, the streamed body, RSET and the
// disconnect. Middleware that wraps a Session implements Unwrap() Session,
// and the optional interfaces are then found on the sessions it wraps.
//
// Errors from hooks become replies: an *smtp.Error is sent as it is, any
// other error as 451 4.3.0, so that a fault in user code makes the client
// retry rather than bounce. A panic in a hook is a 451 for that step, not a
// dead server.
//
// The server is safe by default: every client-controlled quantity is
// bounded, the end of data is exactly CRLF.CRLF with bare CR or LF refused
// (SMTP smuggling), input pipelined behind STARTTLS is thrown away
// (CVE-2011-0411), and AUTH is offered only under TLS unless
// AllowInsecureAuth is set.
package server

package server

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"

	"github.com/emersion/go-sasl"

	"github.com/smtpkit/smtpkit/smtp"
)

// A Handler opens a Session for each connection, after it is accepted and
// before the greeting. Returning an error refuses the connection: a 5xx
// *smtp.Error is sent as the greeting (RFC 5321 3.1) and the server then
// answers only QUIT; anything else is sent as 421 and the connection closed.
// This is the place for connection ACLs, DNSBL checks and rate limits.
type Handler interface {
	NewSession(ctx context.Context, c *Conn) (Session, error)
}

// Session receives one connection's transactions. Every method runs on the
// connection's goroutine, so a Session needs no locking of its own.
//
// For each hook, a nil error accepts, an *smtp.Error is sent as it is (a
// 5xx rejects, a 4xx defers: the client tries again later), and any other
// error is sent as 451 4.3.0 and logged. A panic is recovered and answered
// with 451 as well.
type Session interface {
	// Mail is called for MAIL FROM. from is the zero Address for the null
	// reverse-path "<>".
	Mail(ctx context.Context, from smtp.Address, opts *smtp.MailOptions) error
	// Rcpt is called for each RCPT TO, separately.
	Rcpt(ctx context.Context, to smtp.Address, opts *smtp.RcptOptions) error
	// Data is called with the message body as it arrives, after DATA or at
	// the first BDAT. The reader returns the body exactly as the client
	// sent it, dot-stuffing removed, and fails if the body breaks a limit
	// or the protocol; a Data that returns nil after such a failure is
	// still answered with the failure, never with 250. Data may return
	// before reading everything; the server drains the rest. An
	// *smtp.Error with a 2xx code replaces the default "250 2.0.0 OK".
	Data(ctx context.Context, r io.Reader) error
	// Reset ends the transaction: after RSET, after each message, and when
	// a new HELO, EHLO or STARTTLS resets the session.
	Reset(ctx context.Context)
	// Close is called once when the connection ends. err is nil after
	// QUIT, and otherwise says why the connection ended.
	Close(ctx context.Context, err error)
}

// HelloSession is implemented by sessions that check the HELO, EHLO or LHLO
// name. A rejection is sent as the reply and the session stays unnamed.
type HelloSession interface {
	Hello(ctx context.Context, name string) error
}

// PasswordSession is implemented by sessions that offer AUTH with the
// built-in PLAIN and LOGIN mechanisms. identity is the authorization
// identity PLAIN may carry (empty if none). Returning nil authenticates the
// connection as username. Use a constant-time comparison.
type PasswordSession interface {
	AuthPassword(ctx context.Context, identity, username, password string) error
}

// SASLSession is implemented by sessions that offer other SASL mechanisms
// (through github.com/emersion/go-sasl). AuthSASL starts mech; once the
// exchange succeeds, identity is called for the name the connection is
// authenticated as.
//
// An error from AuthSASL is a hook error like any other (untyped means 451
// 4.3.0). An error from srv.Next cannot be told apart from the mechanism
// rejecting a malformed exchange, so an untyped one means the credentials
// failed (535 5.7.8); return an *smtp.Error such as 454 4.7.0 from Next when
// they could not be checked (a user database down), as PasswordSession's
// untyped errors are.
type SASLSession interface {
	AuthMechanisms() []string
	AuthSASL(ctx context.Context, mech string) (srv sasl.Server, identity func() string, err error)
}

// VerifySession is implemented by sessions that answer VRFY and EXPN.
// Without it both are answered "252 2.5.0" (RFC 5321 3.5.3), which neither
// confirms nor denies.
type VerifySession interface {
	Verify(ctx context.Context, arg string) (string, error)
	Expand(ctx context.Context, arg string) ([]string, error)
}

// A Session that wraps another (middleware: logging, metrics, a policy in
// front of a backend) can say so with an Unwrap method returning the
// wrapped Session, as errors and http.ResponseController do. The server then
// looks for each optional interface of this file (HelloSession,
// PasswordSession, SASLSession, VerifySession, LMTPSession) on the wrapper
// first and then down the chain, and calls the first session that has it:
// a wrapper keeps AUTH, VRFY and LMTP results working without mirroring
// every combination of them, and sees only the hooks it implements.
type wrapper interface {
	Unwrap() Session
}

// optional returns the first session in the chain from sess (through
// Unwrap) that implements T.
func optional[T any](sess Session) (T, bool) {
	for range 32 { // a bound, in case a chain loops
		if t, ok := sess.(T); ok {
			return t, true
		}
		w, ok := sess.(wrapper)
		if !ok {
			break
		}
		if sess = w.Unwrap(); sess == nil {
			break
		}
	}
	var zero T
	return zero, false
}

// LMTPSession is implemented by sessions that give a separate result per
// recipient after an LMTP DATA (RFC 2033 4.2). Without it, Data's result
// is every recipient's.
type LMTPSession interface {
	LMTPData(ctx context.Context, r io.Reader, status *LMTPStatus) error
}

// LMTPStatus collects per-recipient results for an LMTP transaction.
type LMTPStatus struct {
	rcpts []smtp.Address
	errs  []error
	set   []bool
}

// Recipients lists the accepted recipients in order.
func (s *LMTPStatus) Recipients() []smtp.Address { return s.rcpts }

// Set records the result for the i-th accepted recipient. Recipients left
// unset get the result LMTPData returns.
func (s *LMTPStatus) Set(i int, err error) {
	if i >= 0 && i < len(s.errs) {
		s.errs[i], s.set[i] = err, true
	}
}

// Result returns what was Set for the i-th recipient, and whether
// anything was: for wrappers that record results, and for tests.
func (s *LMTPStatus) Result(i int) (err error, ok bool) {
	if i < 0 || i >= len(s.errs) {
		return nil, false
	}
	return s.errs[i], s.set[i]
}

// NewLMTPStatus returns a status for the given recipients, so that an
// LMTPData implementation can be unit-tested without a server.
func NewLMTPStatus(rcpts []smtp.Address) *LMTPStatus {
	return &LMTPStatus{rcpts: rcpts, errs: make([]error, len(rcpts)), set: make([]bool, len(rcpts))}
}

// Conn describes a client connection. Its methods may be called from hooks
// on the connection's goroutine; the fields that change (HELO name, TLS,
// authentication) change only between hooks.
type Conn struct {
	// ID names the connection in logs and trace headers.
	ID         string
	RemoteAddr net.Addr
	LocalAddr  net.Addr

	helo     string
	esmtp    bool
	lmtp     bool
	tls      *tls.ConnectionState
	identity string
	server   *Server
}

// RemoteIP is the client's address without port, IPv4 unmapped.
func (c *Conn) RemoteIP() netip.Addr { return addrIP(c.RemoteAddr) }

// Hello returns the name from HELO, EHLO or LHLO, "" before one.
func (c *Conn) Hello() string { return c.helo }

// ESMTP reports whether the client greeted with EHLO or LHLO.
func (c *Conn) ESMTP() bool { return c.esmtp }

// TLS returns the TLS state, nil on a plaintext connection.
func (c *Conn) TLS() *tls.ConnectionState { return c.tls }

// AuthIdentity returns the authenticated user, "" if none.
func (c *Conn) AuthIdentity() string { return c.identity }

// Protocol returns the "with" value of the trace header (RFC 3848): SMTP,
// ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP, LMTPS, LMTPA or LMTPSA, and the
// UTF8SMTP and UTF8LMTP variants (RFC 6531 3.7.3) when utf8 is set.
func (c *Conn) Protocol(utf8 bool) string {
	var p string
	switch {
	case c.lmtp && utf8:
		p = "UTF8LMTP"
	case c.lmtp:
		p = "LMTP"
	case !c.esmtp:
		return "SMTP"
	case utf8:
		p = "UTF8SMTP"
	default:
		p = "ESMTP"
	}
	if c.tls != nil {
		p += "S"
	}
	if c.identity != "" {
		p += "A"
	}
	return p
}

// Received returns the trace header for a message received on this
// connection (RFC 5321 4.4). rcpts is used for the "for" clause only when
// there is exactly one, so that Bcc recipients are not disclosed.
func (c *Conn) Received(opts *smtp.MailOptions, rcpts []smtp.Address) smtp.Received {
	r := smtp.Received{
		Helo:     c.helo,
		RemoteIP: c.RemoteIP(),
		With:     c.Protocol(opts != nil && opts.UTF8),
		ID:       c.ID,
	}
	if c.server != nil {
		r.By = c.server.hostname()
	}
	if len(rcpts) == 1 {
		r.For = rcpts[0].String()
	}
	if c.tls != nil {
		r.TLS = "version=" + tls.VersionName(c.tls.Version) + " cipher=" + tls.CipherSuiteName(c.tls.CipherSuite)
	}
	return r
}

type connKey struct{}

// ConnFromContext returns the connection a hook's context belongs to.
func ConnFromContext(ctx context.Context) *Conn {
	c, _ := ctx.Value(connKey{}).(*Conn)
	return c
}

func addrIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

package smtptest

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/emersion/go-sasl"

	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
)

// Recorder is a server.Handler that records every session: the connection,
// each hook called with its arguments and result, and each message body.
// It is safe for concurrent use.
//
// On its own it accepts everything, unless one of its Func fields says
// otherwise. With Handler set it wraps that handler: every hook is passed
// on, and what the wrapped handler answered is recorded, so a test can see
// what its own handler saw. The Recorder offers AUTH, VRFY/EXPN and
// per-recipient LMTP results exactly when the wrapped sessions do.
//
// Bodies are kept in memory; the server's MaxMessageBytes bounds them.
type Recorder struct {
	// Handler, if set, is the handler whose sessions are recorded.
	Handler server.Handler

	// ConnectFunc, HelloFunc, MailFunc and RcptFunc, if set, run before
	// the wrapped handler's hook; an error they return is the reply, and
	// the wrapped hook is then not called.
	ConnectFunc func(ctx context.Context, c *server.Conn) error
	HelloFunc   func(ctx context.Context, name string) error
	MailFunc    func(ctx context.Context, from smtp.Address, opts *smtp.MailOptions) error
	RcptFunc    func(ctx context.Context, to smtp.Address, opts *smtp.RcptOptions) error
	// DataFunc, if set, runs once the whole body has been read and the
	// wrapped handler, if any, has accepted it; its error is the reply.
	DataFunc func(ctx context.Context, m *Message) error

	mu       sync.Mutex
	sessions []*SessionRecord
	messages []Message
}

// ConnInfo is what a Conn said at one moment of a session.
type ConnInfo struct {
	ID           string
	RemoteAddr   net.Addr
	LocalAddr    net.Addr
	Hello        string
	ESMTP        bool
	TLS          *tls.ConnectionState
	AuthIdentity string
}

func connInfo(c *server.Conn) ConnInfo {
	return ConnInfo{
		ID:           c.ID,
		RemoteAddr:   c.RemoteAddr,
		LocalAddr:    c.LocalAddr,
		Hello:        c.Hello(),
		ESMTP:        c.ESMTP(),
		TLS:          c.TLS(),
		AuthIdentity: c.AuthIdentity(),
	}
}

// Message is one body received after MAIL and RCPT.
type Message struct {
	// Conn describes the connection as of the DATA or BDAT.
	Conn        ConnInfo
	From        smtp.Address
	MailOptions smtp.MailOptions
	// To lists the recipients the session accepted.
	To []server.Recipient
	// Data is the body as the client sent it, dot-stuffing removed, even
	// the part a wrapped handler left unread.
	Data []byte
	// Err is why the message was refused: the error the hook returned or,
	// when the body broke a limit or the protocol, the reader's error. It
	// is nil, or an *smtp.Error with a 2xx code, for an accepted message.
	// For LMTP it is LMTPData's overall result; per-recipient results set
	// through the LMTPStatus are not seen.
	Err error
}

// Accepted reports whether the message got a 2xx reply.
func (m *Message) Accepted() bool {
	if m.Err == nil {
		return true
	}
	var se *smtp.Error
	return errors.As(m.Err, &se) && se.Code >= 200 && se.Code < 300
}

// Addresses returns the recipients' addresses.
func (m *Message) Addresses() []smtp.Address {
	out := make([]smtp.Address, len(m.To))
	for i, r := range m.To {
		out[i] = r.Address
	}
	return out
}

// EventKind names the hook an Event records.
type EventKind string

// Event kinds, one per hook.
const (
	EventConnect EventKind = "connect" // Handler.NewSession
	EventHello   EventKind = "hello"   // HELO, EHLO or LHLO; Arg is the name
	EventAuth    EventKind = "auth"    // AUTH; Arg is the user name (password) or the mechanism (SASL)
	EventMail    EventKind = "mail"    // MAIL; Address and MailOptions are set
	EventRcpt    EventKind = "rcpt"    // RCPT; Address and RcptOptions are set
	EventData    EventKind = "data"    // the body; Arg is its size in bytes
	EventReset   EventKind = "reset"   // end of a transaction
	EventVerify  EventKind = "vrfy"    // VRFY; Arg is the argument
	EventExpand  EventKind = "expn"    // EXPN; Arg is the argument
	EventClose   EventKind = "close"   // Session.Close; Err is why the connection ended
)

// Event is one hook call and its result.
type Event struct {
	Kind        EventKind
	Arg         string
	Address     smtp.Address
	MailOptions smtp.MailOptions
	RcptOptions smtp.RcptOptions
	// Err is what the hook returned (for close: why the session ended).
	Err error
}

// String renders the event as a short log line: "mail <a@example.com>",
// "rcpt <b@example.com>: 550 5.1.1 No such user here", "data 42",
// "close".
func (e Event) String() string {
	s := string(e.Kind)
	switch e.Kind {
	case EventMail, EventRcpt:
		s += " " + e.Address.Path()
	default:
		if e.Arg != "" {
			s += " " + e.Arg
		}
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// SessionRecord is what a Recorder saw of one connection.
type SessionRecord struct {
	// Conn describes the connection as of the last hook.
	Conn   ConnInfo
	Events []Event
	// Messages lists every body received, accepted or not.
	Messages []Message
	// Closed is set once the session has ended: after Session.Close, or
	// when NewSession refused the connection.
	Closed bool
	// CloseErr is the error Session.Close got (nil after QUIT), or the
	// refusal from NewSession.
	CloseErr error
}

// Log returns the events as strings, for comparing against a transcript.
func (s *SessionRecord) Log() []string {
	out := make([]string, len(s.Events))
	for i, e := range s.Events {
		out[i] = e.String()
	}
	return out
}

// Sessions returns a copy of the sessions recorded so far, in the order
// they connected. A session is complete once Closed is set; Server.Close
// waits for that.
func (r *Recorder) Sessions() []SessionRecord {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]SessionRecord, len(r.sessions))
	for i, s := range r.sessions {
		out[i] = *s
		out[i].Events = append([]Event(nil), s.Events...)
		out[i].Messages = append([]Message(nil), s.Messages...)
	}
	return out
}

// Messages returns the accepted messages from every session, in the order
// their bodies ended. A message is recorded before its reply is sent, so
// it is here once the client has seen the reply.
func (r *Recorder) Messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Message(nil), r.messages...)
}

func (r *Recorder) add(rec *SessionRecord, c *server.Conn, e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec.Conn = connInfo(c)
	rec.Events = append(rec.Events, e)
}

// NewSession implements server.Handler.
func (r *Recorder) NewSession(ctx context.Context, c *server.Conn) (server.Session, error) {
	rec := &SessionRecord{Conn: connInfo(c)}
	r.mu.Lock()
	r.sessions = append(r.sessions, rec)
	r.mu.Unlock()

	var err error
	if r.ConnectFunc != nil {
		err = r.ConnectFunc(ctx, c)
	}
	var inner server.Session
	if err == nil && r.Handler != nil {
		inner, err = r.Handler.NewSession(ctx, c)
		if err == nil && inner == nil {
			err = errors.New("smtptest: wrapped Handler returned no session")
		}
	}
	r.add(rec, c, Event{Kind: EventConnect, Err: err})
	if err != nil {
		r.mu.Lock()
		rec.Closed, rec.CloseErr = true, err
		r.mu.Unlock()
		return nil, err
	}
	s := &recSession{r: r, rec: rec, conn: c, inner: inner}
	return s.withOptional(), nil
}

// recSession records one session and passes each hook on to inner, if any.
// It implements HelloSession and LMTPSession unconditionally, since
// without an inner implementation it behaves as the server would without
// them; AUTH and VRFY change what the server offers, so the wrappers below
// add them only when inner has them.
type recSession struct {
	r     *Recorder
	rec   *SessionRecord
	conn  *server.Conn
	inner server.Session
	tx    *Message
}

func (s *recSession) event(e Event) { s.r.add(s.rec, s.conn, e) }

func (s *recSession) Hello(ctx context.Context, name string) error {
	var err error
	if s.r.HelloFunc != nil {
		err = s.r.HelloFunc(ctx, name)
	}
	if hs, ok := s.inner.(server.HelloSession); ok && err == nil {
		err = hs.Hello(ctx, name)
	}
	s.event(Event{Kind: EventHello, Arg: name, Err: err})
	return err
}

func (s *recSession) Mail(ctx context.Context, from smtp.Address, opts *smtp.MailOptions) error {
	var err error
	if s.r.MailFunc != nil {
		err = s.r.MailFunc(ctx, from, opts)
	}
	if s.inner != nil && err == nil {
		err = s.inner.Mail(ctx, from, opts)
	}
	s.event(Event{Kind: EventMail, Address: from, MailOptions: *opts, Err: err})
	if err == nil {
		s.tx = &Message{From: from, MailOptions: *opts}
	}
	return err
}

func (s *recSession) Rcpt(ctx context.Context, to smtp.Address, opts *smtp.RcptOptions) error {
	var err error
	if s.r.RcptFunc != nil {
		err = s.r.RcptFunc(ctx, to, opts)
	}
	if s.inner != nil && err == nil {
		err = s.inner.Rcpt(ctx, to, opts)
	}
	o := *opts
	o.Notify = append([]smtp.DSNNotify(nil), opts.Notify...)
	s.event(Event{Kind: EventRcpt, Address: to, RcptOptions: o, Err: err})
	if err == nil && s.tx != nil {
		s.tx.To = append(s.tx.To, server.Recipient{Address: to, Options: o})
	}
	return err
}

func (s *recSession) Data(ctx context.Context, r io.Reader) error {
	return s.data(ctx, r, func(r io.Reader) error { return s.inner.Data(ctx, r) })
}

// LMTPData implements server.LMTPSession.
func (s *recSession) LMTPData(ctx context.Context, r io.Reader, st *server.LMTPStatus) error {
	if ls, ok := s.inner.(server.LMTPSession); ok {
		return s.data(ctx, r, func(r io.Reader) error { return ls.LMTPData(ctx, r, st) })
	}
	return s.Data(ctx, r)
}

func (s *recSession) data(ctx context.Context, body io.Reader, pass func(io.Reader) error) error {
	rr := &recordingReader{r: body}
	var err error
	if s.inner != nil {
		err = pass(rr)
	}
	io.Copy(io.Discard, rr) // record what the wrapped handler left unread
	m := Message{Conn: connInfo(s.conn), Data: rr.buf.Bytes()}
	if s.tx != nil {
		m.From, m.MailOptions = s.tx.From, s.tx.MailOptions
		m.To = append([]server.Recipient(nil), s.tx.To...)
	}
	if err == nil && rr.err == nil && s.r.DataFunc != nil {
		err = s.r.DataFunc(ctx, &m)
	}
	m.Err = err
	if rr.err != nil {
		// The server answers a broken body with its own error, whatever
		// the hook said.
		m.Err = rr.err
	}
	s.r.mu.Lock()
	s.rec.Conn = m.Conn
	s.rec.Events = append(s.rec.Events, Event{Kind: EventData, Arg: strconv.Itoa(len(m.Data)), Err: m.Err})
	s.rec.Messages = append(s.rec.Messages, m)
	if m.Accepted() {
		s.r.messages = append(s.r.messages, m)
	}
	s.r.mu.Unlock()
	return err
}

func (s *recSession) Reset(ctx context.Context) {
	if s.inner != nil {
		s.inner.Reset(ctx)
	}
	s.tx = nil
	s.event(Event{Kind: EventReset})
}

func (s *recSession) Close(ctx context.Context, err error) {
	if s.inner != nil {
		s.inner.Close(ctx, err)
	}
	s.r.mu.Lock()
	s.rec.Conn = connInfo(s.conn)
	s.rec.Events = append(s.rec.Events, Event{Kind: EventClose, Err: err})
	s.rec.Closed, s.rec.CloseErr = true, err
	s.r.mu.Unlock()
}

// recordingReader keeps a copy of what is read through it and the first
// error other than io.EOF.
type recordingReader struct {
	r   io.Reader
	buf bytes.Buffer
	err error
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	n, err := rr.r.Read(p)
	rr.buf.Write(p[:n])
	if err != nil && err != io.EOF && rr.err == nil {
		rr.err = err
	}
	return n, err
}

type passwordPart struct{ s *recSession }

func (p passwordPart) AuthPassword(ctx context.Context, identity, username, password string) error {
	err := p.s.inner.(server.PasswordSession).AuthPassword(ctx, identity, username, password)
	p.s.event(Event{Kind: EventAuth, Arg: username, Err: err}) // never the password
	return err
}

type saslPart struct{ s *recSession }

func (p saslPart) AuthMechanisms() []string {
	return p.s.inner.(server.SASLSession).AuthMechanisms()
}

func (p saslPart) AuthSASL(ctx context.Context, mech string) (sasl.Server, func() string, error) {
	srv, id, err := p.s.inner.(server.SASLSession).AuthSASL(ctx, mech)
	p.s.event(Event{Kind: EventAuth, Arg: mech, Err: err})
	return srv, id, err
}

type verifyPart struct{ s *recSession }

func (p verifyPart) Verify(ctx context.Context, arg string) (string, error) {
	res, err := p.s.inner.(server.VerifySession).Verify(ctx, arg)
	p.s.event(Event{Kind: EventVerify, Arg: arg, Err: err})
	return res, err
}

func (p verifyPart) Expand(ctx context.Context, arg string) ([]string, error) {
	res, err := p.s.inner.(server.VerifySession).Expand(ctx, arg)
	p.s.event(Event{Kind: EventExpand, Arg: arg, Err: err})
	return res, err
}

// withOptional returns s with exactly the optional interfaces of its inner
// session that change what the server offers.
func (s *recSession) withOptional() server.Session {
	_, pw := s.inner.(server.PasswordSession)
	_, sa := s.inner.(server.SASLSession)
	_, vr := s.inner.(server.VerifySession)
	p, a, v := passwordPart{s}, saslPart{s}, verifyPart{s}
	switch {
	case pw && sa && vr:
		return struct {
			*recSession
			passwordPart
			saslPart
			verifyPart
		}{s, p, a, v}
	case pw && sa:
		return struct {
			*recSession
			passwordPart
			saslPart
		}{s, p, a}
	case pw && vr:
		return struct {
			*recSession
			passwordPart
			verifyPart
		}{s, p, v}
	case sa && vr:
		return struct {
			*recSession
			saslPart
			verifyPart
		}{s, a, v}
	case pw:
		return struct {
			*recSession
			passwordPart
		}{s, p}
	case sa:
		return struct {
			*recSession
			saslPart
		}{s, a}
	case vr:
		return struct {
			*recSession
			verifyPart
		}{s, v}
	}
	return s
}

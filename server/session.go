package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"

	"github.com/smtpkit/smtpkit/smtp"
	"github.com/smtpkit/smtpkit/smtp/wire"
)

// Transaction states.
const (
	stateIdle = iota // waiting for a command outside a transaction
	stateBusy        // handling a command or in a transaction
)

type session struct {
	srv  *Server
	nc   net.Conn // current connection (the TLS one after STARTTLS)
	tc   *timeoutConn
	br   *wire.Reader
	bw   *wire.Writer
	conn *Conn
	sess Session
	// The session's optional interfaces, found once (see optional).
	helloS  HelloSession
	pwdS    PasswordSession
	saslS   SASLSession
	verifyS VerifySession
	lmtpS   LMTPSession
	ctx     context.Context
	cancel  context.CancelFunc
	counted bool
	state   atomic.Int32
	closeMu sync.Mutex
	// interrupted is set, under closeMu, when Shutdown pokes an idle
	// session with a past read deadline.
	interrupted bool

	// transaction
	from     *smtp.Address
	mailOpts smtp.MailOptions
	rcpts    []Recipient
	rejected int // RCPTs refused in this transaction

	// counters
	errors       int
	txCount      int
	preHello     int
	junk         int // NOOP, RSET, VRFY, EXPN, HELP since the last accepted message
	msgsAccepted int
	bytesIn      int64
	quit         bool
	closing      bool
	endErr       error
	badGreeting  bool // the greeting refused service: only QUIT is served
	authFailures int
	peerDone     bool // the client is gone or the stream is broken: no linger
	lingered     bool
	start        time.Time
}

func newSession(srv *Server, c net.Conn, base context.Context) *session {
	s := &session{srv: srv, nc: c, start: time.Now()}
	s.conn = &Conn{ID: srv.newID(), lmtp: srv.LMTP, server: srv}
	s.ctx, s.cancel = context.WithCancel(context.WithValue(base, connKey{}, s.conn))
	s.tc = &timeoutConn{Conn: c, s: s}
	s.br = wire.NewReader(s.tc, wire.CommandBufferSize)
	s.bw = wire.NewWriter(s.tc)
	s.br.BeforeFill = s.flush
	return s
}

// timeoutConn sets a read deadline before each read and a write deadline
// before each write. A deadline moves only when it would move by more than
// deadlineSlack, which keeps timer churn off the per-read path, and at once
// when the timeout shrinks (a DataTimeout shorter than ReadTimeout).
type timeoutConn struct {
	net.Conn
	s             *session
	readTimeout   time.Duration
	readDeadline  time.Time
	writeDeadline time.Time
}

// deadlineSlack is how stale a deadline may be: a sixteenth of the timeout,
// at most a second. A fixed second would let a sub-second timeout fire
// while the client is busy sending.
func deadlineSlack(d time.Duration) time.Duration { return min(d/16, time.Second) }

func (c *timeoutConn) Read(p []byte) (int, error) {
	s := c.s
	s.closeMu.Lock()
	// Shutdown sets a past deadline on idle sessions; a read that starts
	// after that must not push it back out.
	if s.srv.inShutdown.Load() && s.state.Load() == stateIdle {
		s.closeMu.Unlock()
		return 0, errShuttingDown
	}
	// A session poked while idle that has since begun a transaction must
	// get its deadline back, or Shutdown would cut the transaction short.
	d := time.Now().Add(c.readTimeout)
	if s.interrupted || d.Before(c.readDeadline) || d.Sub(c.readDeadline) > deadlineSlack(c.readTimeout) {
		c.Conn.SetReadDeadline(d)
		c.readDeadline = d
		s.interrupted = false
	}
	s.closeMu.Unlock()
	return c.Conn.Read(p)
}

func (c *timeoutConn) Write(p []byte) (int, error) {
	t := orDur(c.s.srv.WriteTimeout, DefaultWriteTimeout)
	if d := time.Now().Add(t); d.Before(c.writeDeadline) || d.Sub(c.writeDeadline) > deadlineSlack(t) {
		c.Conn.SetWriteDeadline(d)
		c.writeDeadline = d
	}
	return c.Conn.Write(p)
}

var errShuttingDown = errors.New("server shutting down")

func (s *session) flush() error { return s.bw.Flush() }

// interruptIfIdle wakes a session blocked waiting for a command outside a
// transaction, so that it can say 421 and close.
func (s *session) interruptIfIdle() {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.state.Load() == stateIdle {
		s.interrupted = true
		s.nc.SetReadDeadline(time.Unix(1, 0))
	}
}

// abort closes the connection at once (Server.Close), before it cancels
// the hooks' context: a hook woken by the cancellation must find nobody
// left to answer.
func (s *session) abort() {
	s.closeMu.Lock()
	s.nc.Close()
	s.closeMu.Unlock()
	s.cancel()
}

func (s *session) reply(code int, enh smtp.EnhancedCode, text string) {
	if code >= 400 {
		s.errors++
	}
	s.bw.Reply(code, enh, text)
}

func (s *session) replyErr(e *smtp.Error) { s.reply(e.Code, e.EnhancedCode, e.Message) }

// replyFinal sends a reply that ends the session. RFC 2034 asks for the
// enhanced code only after EHLO, but a client turned away before it
// (connection limits, a refused greeting, a timeout) should learn why as
// well, and reply text is free-form, so the code goes in either way, as
// Postfix does.
func (s *session) replyFinal(code int, enh smtp.EnhancedCode, text string) {
	if !s.bw.Enhanced && enh != (smtp.EnhancedCode{}) {
		text = enh.String() + " " + text
	}
	s.bw.Reply(code, enh, text)
}

func (s *session) serve() {
	defer s.finish()
	s.tc.readTimeout = orDur(s.srv.ReadTimeout, DefaultReadTimeout)

	// A PROXY-protocol listener reads its header here, on the session's
	// goroutine, so the address the limits and hooks see is the client's.
	s.conn.RemoteAddr, s.conn.LocalAddr = s.nc.RemoteAddr(), s.nc.LocalAddr()
	// A required header that was missing or malformed leaves the proxy's
	// own address in RemoteAddr; no hook or limit may take it for the
	// client's (the proxy is often on a trusted network).
	if pc, ok := s.nc.(*proxyproto.Conn); ok && pc.ProxyHeaderPolicy == proxyproto.REQUIRE && pc.ProxyHeader() == nil {
		s.endErr = errors.New("no valid PROXY header")
		s.peerDone = true
		return
	}
	if s.ctx.Err() != nil { // Server.Close came first
		s.endErr = ErrServerClosed
		s.peerDone = true
		return
	}
	if tc, ok := s.nc.(*tls.Conn); ok { // implicit TLS
		hctx, cancel := context.WithTimeout(s.ctx, DefaultTLSHandshakeTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			s.endErr = fmt.Errorf("tls handshake: %w", err)
			s.peerDone = true
			return
		}
		st := tc.ConnectionState()
		s.conn.tls = &st
	}

	if !s.srv.admit(s) {
		s.replyFinal(421, smtp.EnhancedCode{4, 7, 0}, s.srv.hostname()+" Too many connections, try again later")
		s.endErr = errors.New("connection limit")
		s.lingerClose()
		return
	}

	var err error
	s.callHook(func() error {
		s.sess, err = s.srv.Handler.NewSession(s.ctx, s.conn)
		return err
	})
	if err == nil && s.sess != nil {
		s.helloS, _ = optional[HelloSession](s.sess)
		s.pwdS, _ = optional[PasswordSession](s.sess)
		s.saslS, _ = optional[SASLSession](s.sess)
		s.verifyS, _ = optional[VerifySession](s.sess)
		s.lmtpS, _ = optional[LMTPSession](s.sess)
	}
	if err != nil || s.sess == nil {
		if err == nil {
			err = errors.New("handler returned no session")
		}
		e := smtp.ErrorOf(err)
		s.endErr = err
		if e.Permanent() {
			// RFC 5321 3.1: refuse with 554 and then wait for QUIT.
			s.replyFinal(554, e.EnhancedCode, s.srv.hostname()+" "+e.Message)
			s.badGreeting = true
		} else {
			s.replyFinal(421, e.EnhancedCode, s.srv.hostname()+" "+e.Message)
			s.lingerClose()
			return
		}
	} else {
		greet := s.srv.hostname() + " ESMTP smtpkit"
		if s.srv.LMTP {
			greet = s.srv.hostname() + " LMTP smtpkit"
		}
		s.bw.Reply(220, smtp.EnhancedCode{}, greet)
	}
	s.loop()
}

func (s *session) loop() {
	maxLine := orPos(s.srv.MaxLineLength, DefaultMaxLineLength)
	for !s.closing {
		if s.srv.inShutdown.Load() && s.from == nil {
			s.replyFinal(421, smtp.EnhancedCode{4, 3, 2}, s.srv.hostname()+" Service shutting down, closing connection")
			s.endErr = errShuttingDown
			return
		}
		if s.from == nil {
			s.state.Store(stateIdle)
		}
		// RFC 4954 4: an AUTH command, initial response included, may be
		// 12288 octets long; other commands keep the shorter limit.
		lineMax := maxLine
		if s.authPending() {
			lineMax = max(maxLine, authLineLength)
		}
		line, err := s.br.ReadLine(lineMax)
		s.state.Store(stateBusy)
		if err != nil {
			if err == wire.ErrLineTooLong {
				s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Line too long")
				if s.tooManyErrors() {
					return
				}
				continue
			}
			s.readFailed(err)
			return
		}
		cmd, err := wire.ParseCommand(line)
		if err == nil && lineMax > maxLine && len(line)+len("\r\n") > maxLine && cmd.Verb != "AUTH" {
			err = wire.ErrLineTooLong
		}
		if err != nil {
			switch err {
			case wire.ErrLineTooLong:
				s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Line too long")
			case wire.ErrEmptyCommand:
				s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Empty command")
			case wire.ErrBadUTF8:
				s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Invalid UTF-8 in command")
			default:
				s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Invalid character in command")
			}
			if s.tooManyErrors() {
				return
			}
			continue
		}
		s.dispatch(cmd)
		s.br.Release() // AUTH may have grown the buffer
		if s.closing {
			return
		}
		if s.tooManyErrors() {
			return
		}
	}
}

// readFailed ends the session after a failed read, telling the client why
// when it is still there to hear it.
func (s *session) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, errShuttingDown) || s.srv.inShutdown.Load() && errors.As(err, &ne) && ne.Timeout():
		s.replyFinal(421, smtp.EnhancedCode{4, 3, 2}, s.srv.hostname()+" Service shutting down, closing connection")
		s.endErr = errShuttingDown
	case errors.As(err, &ne) && ne.Timeout():
		s.replyFinal(421, smtp.EnhancedCode{4, 4, 2}, s.srv.hostname()+" Timeout, closing connection")
		s.endErr = errors.New("timeout")
	case err == wire.ErrDiscardLimit:
		s.replyFinal(500, smtp.EnhancedCode{5, 5, 2}, "Line too long, closing connection")
		s.endErr = err
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed):
		s.endErr = errors.New("client disconnected without QUIT")
		s.peerDone = true
	default:
		s.endErr = err
		s.peerDone = true
	}
}

func (s *session) tooManyErrors() bool {
	if s.errors >= limit(s.srv.MaxErrors, DefaultMaxErrors) {
		s.closeOverLimit("errors")
		return true
	}
	return false
}

func (s *session) finish() {
	if s.quit || s.peerDone {
		s.bw.Flush()
	} else {
		// The server ends the session (a limit, a timeout, Shutdown) while
		// the client may still be sending: closing with unread input would
		// reset the connection and could destroy the final reply.
		s.lingerClose()
	}
	if s.sess != nil {
		err := s.endErr
		if s.quit {
			err = nil
		}
		s.callHook(func() error { s.sess.Close(s.ctx, err); return nil })
	}
	s.cancel()
	// Released before the close, so that a client that sees the
	// connection end can connect again at once within the limits.
	s.srv.register(s, false)
	s.closeMu.Lock()
	s.nc.Close()
	s.closeMu.Unlock()
	s.br.Free()
	s.bw.Free()

	log := s.srv.logger()
	if !log.Enabled(s.ctx, slog.LevelInfo) {
		return // spare building the line at every connection when nobody reads it
	}
	outcome := "quit"
	if !s.quit {
		outcome = "aborted"
		if s.endErr != nil {
			outcome = s.endErr.Error()
		}
	}
	// LogAttrs with typed values: no boxing of the numbers per line.
	attrs := [...]slog.Attr{slog.String("id", s.conn.ID), slog.String("remote", s.conn.RemoteAddr.String()),
		slog.String("helo", s.conn.helo), slog.Bool("tls", s.conn.tls != nil),
		slog.Int("messages", s.msgsAccepted), slog.Int64("bytes", s.bytesIn), slog.Int("errors", s.errors),
		slog.Duration("duration", time.Since(s.start).Round(time.Millisecond)), slog.String("outcome", outcome),
		slog.String("user", s.conn.identity)}
	n := len(attrs)
	if s.conn.identity == "" {
		n--
	}
	log.LogAttrs(s.ctx, slog.LevelInfo, "session", attrs[:n]...)
}

// lingerClose sends what is buffered, then reads and drops what the client
// is still sending for a moment, so that closing with unread input does
// not reset the connection before the client has read our reply.
func (s *session) lingerClose() {
	s.closing = true
	if s.lingered {
		return
	}
	s.lingered = true
	s.bw.Flush()
	closeWrite(s.nc)
	s.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.CopyN(io.Discard, s.nc, lingerBytes)
}

// closeWrite half-closes c, so that the client reads our last reply and
// then end of stream.
func closeWrite(c net.Conn) {
	switch c := c.(type) {
	case interface{ CloseWrite() error }:
		c.CloseWrite()
	case *proxyproto.Conn: // it hides the method of the TCP connection it wraps
		if tc, ok := c.TCPConn(); ok {
			tc.CloseWrite()
		}
	}
}

// callHook runs user code, turning a panic into a 451 for this step.
func (s *session) callHook(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.srv.logger().Error("panic in hook", "id", s.conn.ID, "panic", r, "stack", string(debug.Stack()))
			err = &smtp.Error{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary local problem, try again later", Err: fmt.Errorf("panic: %v", r)}
		}
	}()
	return f()
}

func (s *session) hookErr(err error) *smtp.Error {
	e := smtp.ErrorOf(err)
	if e.Err != nil && e.Code >= 400 {
		s.srv.logger().Warn("hook failed", "id", s.conn.ID, "reply", e.Code, "err", e.Err)
	}
	return e
}

// closeOverLimit ends a session that passed a per-connection limit: 421
// 4.7.0 "Too many <what>", which is also the session's logged outcome.
func (s *session) closeOverLimit(what string) {
	s.replyFinal(421, smtp.EnhancedCode{4, 7, 0}, s.srv.hostname()+" Too many "+what+", closing connection")
	s.endErr = errors.New("too many " + what)
	s.closing = true
}

// junkCommand counts a NOOP, RSET, VRFY, EXPN or HELP against
// MaxJunkCommands and reports whether that ended the session.
func (s *session) junkCommand() bool {
	s.junk++
	if s.junk > limit(s.srv.MaxJunkCommands, DefaultMaxJunkCommands) {
		s.closeOverLimit("commands without mail")
		return true
	}
	return false
}

func (s *session) dispatch(cmd wire.Command) {
	if s.badGreeting {
		if cmd.Verb == "QUIT" {
			s.cmdQuit()
			return
		}
		s.reply(503, smtp.EnhancedCode{5, 5, 1}, "No service here, send QUIT")
		return
	}
	if s.conn.helo == "" {
		switch cmd.Verb {
		case "HELO", "EHLO", "LHLO", "QUIT", "STARTTLS":
		default:
			s.preHello++
			if s.preHello > limit(s.srv.MaxCommandsBeforeHello, DefaultMaxCommandsBeforeHello) {
				s.closeOverLimit("commands before HELO")
				return
			}
		}
	}
	switch cmd.Verb {
	case "HELO", "EHLO":
		if s.srv.LMTP {
			s.reply(500, smtp.EnhancedCode{5, 5, 1}, "This is an LMTP server, use LHLO")
			return
		}
		s.cmdHello(cmd)
	case "LHLO":
		if !s.srv.LMTP {
			s.reply(500, smtp.EnhancedCode{5, 5, 1}, "Command not recognized")
			return
		}
		s.cmdHello(cmd)
	case "MAIL":
		s.cmdMail(cmd.Arg)
	case "RCPT":
		s.cmdRcpt(cmd.Arg)
	case "DATA":
		s.cmdData(cmd.Arg)
	case "BDAT":
		s.cmdBDAT(cmd.Arg)
	case "RSET":
		if s.junkCommand() {
			return
		}
		if cmd.Arg != "" {
			s.reply(501, smtp.EnhancedCode{5, 5, 4}, "RSET takes no arguments")
			return
		}
		s.resetTx()
		s.reply(250, smtp.EnhancedCode{2, 0, 0}, "OK")
	case "NOOP":
		if s.junkCommand() {
			return
		}
		s.reply(250, smtp.EnhancedCode{2, 0, 0}, "OK")
	case "QUIT":
		s.cmdQuit()
	case "VRFY", "EXPN":
		if s.junkCommand() {
			return
		}
		s.cmdVerify(cmd)
	case "HELP":
		if s.junkCommand() {
			return
		}
		s.reply(214, smtp.EnhancedCode{2, 0, 0}, "See RFC 5321 and https://www.rfc-editor.org/rfc/rfc5321")
	case "STARTTLS":
		s.cmdStartTLS(cmd.Arg)
	case "AUTH":
		s.cmdAuth(cmd.Arg)
	default:
		s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Command not recognized")
	}
}

func (s *session) cmdQuit() {
	s.quit = true
	s.bw.Reply(221, smtp.EnhancedCode{2, 0, 0}, s.srv.hostname()+" Bye")
	s.closing = true
}

func (s *session) cmdHello(cmd wire.Command) {
	name := cmd.Arg
	if name == "" || strings.ContainsAny(name, " \t") && cmd.Verb != "HELO" {
		s.reply(501, smtp.EnhancedCode{5, 5, 4}, "Syntax: "+cmd.Verb+" hostname")
		return
	}
	if i := strings.IndexByte(name, ' '); i >= 0 { // HELO: some clients add junk
		name = name[:i]
	}
	s.resetTx()
	if hs := s.helloS; hs != nil {
		if err := s.callHook(func() error { return hs.Hello(s.ctx, name) }); err != nil {
			s.replyErr(s.hookErr(err))
			return
		}
	}
	s.conn.helo = name
	s.conn.esmtp = cmd.Verb != "HELO"
	s.bw.Enhanced = s.conn.esmtp && s.srv.enabled(ExtEnhancedStatusCodes)
	if !s.conn.esmtp {
		s.reply(250, smtp.EnhancedCode{}, s.srv.hostname())
		return
	}
	lines := []string{s.srv.hostname() + " greets " + name}
	if s.srv.enabled(ExtPipelining) {
		lines = append(lines, "PIPELINING")
	}
	if s.srv.enabled(ExtSize) {
		lines = append(lines, "SIZE "+strconv.FormatInt(s.srv.maxMessageBytes(), 10))
	}
	if s.srv.enabled(Ext8BitMIME) {
		lines = append(lines, "8BITMIME")
	}
	if s.srv.enabled(ExtEnhancedStatusCodes) {
		lines = append(lines, "ENHANCEDSTATUSCODES")
	}
	if s.srv.enabled(ExtSMTPUTF8) {
		lines = append(lines, "SMTPUTF8")
	}
	if s.srv.enabled(ExtChunking) {
		lines = append(lines, "CHUNKING")
		if s.srv.enabled(ExtBinaryMIME) {
			lines = append(lines, "BINARYMIME")
		}
	}
	if s.srv.enabled(ExtDSN) {
		lines = append(lines, "DSN")
	}
	if s.canStartTLS() {
		lines = append(lines, "STARTTLS")
	}
	if mechs := s.authMechanisms(); len(mechs) > 0 && s.authAllowed() {
		lines = append(lines, "AUTH "+strings.Join(mechs, " "))
	}
	s.bw.ReplyLines(250, lines)
}

func (s *session) canStartTLS() bool {
	return s.srv.TLSConfig != nil && s.conn.tls == nil && s.srv.enabled(ExtStartTLS)
}

func (s *session) resetTx() {
	if s.from != nil || len(s.rcpts) > 0 {
		s.callHook(func() error { s.sess.Reset(s.ctx); return nil })
	}
	s.from = nil
	s.rcpts = s.rcpts[:0]
	s.rejected = 0
	s.mailOpts = smtp.MailOptions{}
}

func (s *session) needHello() bool {
	if s.conn.helo == "" {
		s.reply(503, smtp.EnhancedCode{5, 5, 1}, "Say "+map[bool]string{false: "HELO/EHLO", true: "LHLO"}[s.srv.LMTP]+" first")
		return false
	}
	return true
}

func (s *session) cmdMail(arg string) {
	if !s.needHello() {
		return
	}
	if s.from != nil {
		s.reply(503, smtp.EnhancedCode{5, 5, 1}, "Nested MAIL command")
		return
	}
	if s.txCount >= limit(s.srv.MaxTransactions, DefaultMaxTransactions) {
		s.closeOverLimit("messages in one connection")
		return
	}
	from, params, err := wire.ParsePathArg(arg, "FROM:")
	if err != nil {
		s.replyErr(pathError(err, smtp.EnhancedCode{5, 1, 7}, "sender"))
		return
	}
	if from.IsPostmaster() { // a domainless postmaster is a recipient form only
		s.reply(501, smtp.EnhancedCode{5, 1, 7}, "Invalid sender address")
		return
	}
	opts, e := s.mailOptions(params)
	if e != nil {
		s.replyErr(e)
		return
	}
	if !from.IsASCII() && !opts.UTF8 {
		s.reply(553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII address needs SMTPUTF8")
		return
	}
	if opts.Size > s.srv.maxMessageBytes() {
		s.reply(552, smtp.EnhancedCode{5, 3, 4}, "Message size exceeds fixed limit")
		return
	}
	if err := s.callHook(func() error { return s.sess.Mail(s.ctx, from, &opts) }); err != nil {
		s.replyErr(s.hookErr(err))
		return
	}
	s.from = &from
	s.mailOpts = opts
	s.reply(250, smtp.EnhancedCode{2, 1, 0}, "OK")
}

// pathError maps a path parser error to its reply; enh is the enhanced
// code for a bad address in this command (5.1.7 sender, 5.1.3 recipient).
func pathError(err error, enh smtp.EnhancedCode, what string) *smtp.Error {
	switch {
	case errors.Is(err, smtp.ErrNeedsSMTPUTF8):
		return smtp.NewError(553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII address needs SMTPUTF8")
	case errors.Is(err, smtp.ErrPathTooLong), errors.Is(err, smtp.ErrLocalTooLong), errors.Is(err, smtp.ErrDomainTooLong):
		return smtp.NewError(501, enh, "Path too long")
	case errors.Is(err, wire.ErrParamSyntax):
		return smtp.NewError(501, smtp.EnhancedCode{5, 5, 4}, "Malformed parameter")
	}
	return smtp.NewError(501, enh, "Invalid "+what+" address syntax")
}

func (s *session) mailOptions(params []wire.Param) (smtp.MailOptions, *smtp.Error) {
	var o smtp.MailOptions
	bad := func(msg string) (smtp.MailOptions, *smtp.Error) {
		return o, smtp.NewError(501, smtp.EnhancedCode{5, 5, 4}, msg)
	}
	// MAIL carries a handful of parameters: a linear scan beats a map.
	seen := make([]string, 0, 8)
	for _, p := range params {
		if slices.Contains(seen, p.Key) {
			return bad("Duplicate parameter " + p.Key)
		}
		seen = append(seen, p.Key)
		switch {
		case p.Key == "SIZE" && s.srv.enabled(ExtSize):
			n, err := strconv.ParseInt(p.Value, 10, 64)
			if err != nil || n < 0 {
				return bad("Invalid SIZE")
			}
			o.Size = n
		case p.Key == "BODY" && (s.srv.enabled(Ext8BitMIME) || s.binaryMIME()):
			// BODY comes with 8BITMIME (RFC 6152) and with BINARYMIME
			// (RFC 3030 3), each of which may be on without the other.
			switch smtp.BodyType(strings.ToUpper(p.Value)) {
			case smtp.Body7Bit:
				o.Body = smtp.Body7Bit
			case smtp.Body8BitMIME:
				if !s.srv.enabled(Ext8BitMIME) {
					return o, smtp.NewError(555, smtp.EnhancedCode{5, 5, 4}, "BODY=8BITMIME not supported")
				}
				o.Body = smtp.Body8BitMIME
			case smtp.BodyBinaryMIME:
				if !s.binaryMIME() {
					return o, smtp.NewError(555, smtp.EnhancedCode{5, 5, 4}, "BODY=BINARYMIME not supported")
				}
				o.Body = smtp.BodyBinaryMIME
			default:
				return bad("Invalid BODY")
			}
		case p.Key == "SMTPUTF8" && s.srv.enabled(ExtSMTPUTF8):
			if !p.Bare {
				return bad("SMTPUTF8 takes no value")
			}
			o.UTF8 = true
		case p.Key == "RET" && s.srv.enabled(ExtDSN):
			switch smtp.DSNReturn(strings.ToUpper(p.Value)) {
			case smtp.ReturnFull:
				o.Return = smtp.ReturnFull
			case smtp.ReturnHeaders:
				o.Return = smtp.ReturnHeaders
			default:
				return bad("Invalid RET")
			}
		case p.Key == "ENVID" && s.srv.enabled(ExtDSN):
			v, err := smtp.DecodeXtext(p.Value)
			if err != nil || len(v) > 100 { // RFC 3461 4.4: at most 100 characters
				return bad("Invalid ENVID")
			}
			o.EnvelopeID = v
		case p.Key == "AUTH" && s.authAllowed() && len(s.authMechanisms()) > 0:
			// RFC 4954 5: trust it only from an authenticated client.
			if p.Value == "<>" {
				o.Auth = "<>"
				break
			}
			v, err := smtp.DecodeXtext(p.Value)
			if err != nil {
				return bad("Invalid AUTH")
			}
			if s.conn.identity != "" {
				o.Auth = v
			}
		default:
			return o, smtp.NewError(555, smtp.EnhancedCode{5, 5, 4}, "Unsupported parameter "+p.Key)
		}
	}
	return o, nil
}

func (s *session) binaryMIME() bool {
	return s.srv.enabled(ExtBinaryMIME) && s.srv.enabled(ExtChunking)
}

func (s *session) cmdRcpt(arg string) {
	if s.from == nil {
		s.reply(503, smtp.EnhancedCode{5, 5, 1}, "Need MAIL before RCPT")
		return
	}
	to, params, err := wire.ParsePathArg(arg, "TO:")
	if err != nil {
		s.replyErr(pathError(err, smtp.EnhancedCode{5, 1, 3}, "recipient"))
		return
	}
	if to.IsNull() {
		s.reply(501, smtp.EnhancedCode{5, 1, 3}, "Invalid recipient address syntax")
		return
	}
	if !to.IsASCII() && !s.mailOpts.UTF8 {
		s.reply(553, smtp.EnhancedCode{5, 6, 7}, "Non-ASCII address needs SMTPUTF8")
		return
	}
	if len(s.rcpts) >= limit(s.srv.MaxRecipients, DefaultMaxRecipients) {
		// RFC 5321 4.5.3.1.10: 452, and the client sends the rest later.
		s.reply(452, smtp.EnhancedCode{4, 5, 3}, "Too many recipients")
		return
	}
	var opts smtp.RcptOptions
	for i, p := range params {
		for _, q := range params[:i] {
			if q.Key == p.Key {
				s.reply(501, smtp.EnhancedCode{5, 5, 4}, "Duplicate parameter "+p.Key)
				return
			}
		}
		switch {
		case p.Key == "NOTIFY" && s.srv.enabled(ExtDSN):
			n, err := smtp.ParseNotify(p.Value)
			if err != nil {
				s.reply(501, smtp.EnhancedCode{5, 5, 4}, "Invalid NOTIFY")
				return
			}
			opts.Notify = n
		case p.Key == "ORCPT" && s.srv.enabled(ExtDSN):
			typ, val, ok := strings.Cut(p.Value, ";")
			dec, err := smtp.DecodeXtext(val)
			if !ok || typ == "" || err != nil || val == "" {
				s.reply(501, smtp.EnhancedCode{5, 5, 4}, "Invalid ORCPT")
				return
			}
			opts.OriginalRecipientType, opts.OriginalRecipient = typ, dec
		default:
			s.reply(555, smtp.EnhancedCode{5, 5, 4}, "Unsupported parameter "+p.Key)
			return
		}
	}
	if err := s.callHook(func() error { return s.sess.Rcpt(s.ctx, to, &opts) }); err != nil {
		s.rejected++
		s.replyErr(s.hookErr(err))
		return
	}
	s.rcpts = append(s.rcpts, Recipient{Address: to, Options: opts})
	s.reply(250, smtp.EnhancedCode{2, 1, 5}, "OK")
}

func (s *session) cmdVerify(cmd wire.Command) {
	vs, ok := s.verifyS, s.verifyS != nil
	if !ok || cmd.Arg == "" {
		if cmd.Arg == "" {
			s.reply(501, smtp.EnhancedCode{5, 5, 4}, "Argument required")
			return
		}
		s.reply(252, smtp.EnhancedCode{2, 5, 0}, "Cannot verify, but will accept the message and attempt delivery")
		return
	}
	var lines []string
	err := s.callHook(func() error {
		if cmd.Verb == "VRFY" {
			l, err := vs.Verify(s.ctx, cmd.Arg)
			lines = []string{l}
			return err
		}
		var err error
		lines, err = vs.Expand(s.ctx, cmd.Arg)
		return err
	})
	if err != nil {
		s.replyErr(s.hookErr(err))
		return
	}
	s.reply(250, smtp.EnhancedCode{2, 1, 5}, strings.Join(lines, "\n"))
}

// txReady checks that a body may follow: MAIL and at least one RCPT
// accepted (RFC 5321 3.3: 503, or 554 when every RCPT was refused).
func (s *session) txReady() bool {
	if s.from == nil {
		s.reply(503, smtp.EnhancedCode{5, 5, 1}, "Need MAIL command")
		return false
	}
	if len(s.rcpts) == 0 {
		if s.rejected > 0 {
			s.reply(554, smtp.EnhancedCode{5, 5, 1}, "No valid recipients")
		} else {
			s.reply(503, smtp.EnhancedCode{5, 5, 1}, "Need RCPT command")
		}
		return false
	}
	return true
}

func (s *session) cmdData(arg string) {
	if arg != "" {
		s.reply(501, smtp.EnhancedCode{5, 5, 4}, "DATA takes no arguments")
		return
	}
	if !s.txReady() {
		return
	}
	if s.mailOpts.Body == smtp.BodyBinaryMIME {
		// RFC 3030 3: BINARYMIME content can only go with BDAT.
		s.reply(503, smtp.EnhancedCode{5, 5, 1}, "BODY=BINARYMIME requires BDAT")
		return
	}
	s.bw.Reply(354, smtp.EnhancedCode{}, "Start mail input; end with <CRLF>.<CRLF>")
	// RFC 2920 3.1: DATA ends a batch, and the client sends nothing more
	// until it has the 354. Send it now: Data may do slow work (open a
	// spool file, connect to the next hop) before it reads the body.
	if s.br.Buffered() == 0 {
		s.flush()
	}
	s.tc.readTimeout = orDur(s.srv.DataTimeout, DefaultDataTimeout)
	s.br.Grow(wire.BodyBufferSize)
	dr := wire.NewDotReader(s.br, s.srv.maxMessageBytes(), orPos(s.srv.MaxTextLineLength, DefaultMaxTextLineLength))
	results := s.runData(dr)
	rerr := dr.Drain()
	s.tc.readTimeout = orDur(s.srv.ReadTimeout, DefaultReadTimeout)
	s.br.Release()
	s.bytesIn += dr.Size()
	switch {
	case rerr == wire.ErrBareLineEnding:
		s.reply(550, smtp.EnhancedCode{5, 5, 2}, "Bare CR or LF in message data is not allowed, closing connection")
		s.endErr = rerr
		s.resetTx()
		s.lingerClose()
		return
	case rerr != nil && rerr != wire.ErrTooBig && rerr != wire.ErrTextLineTooLong:
		s.readFailed(rerr)
		s.closing = true
		return
	}
	s.finishTx(bodyError(rerr), results)
}

// bodyError maps a body reader's failure to its reply.
func bodyError(err error) *smtp.Error {
	switch err {
	case nil:
		return nil
	case wire.ErrTooBig:
		return smtp.NewError(552, smtp.EnhancedCode{5, 3, 4}, "Message size exceeds fixed limit")
	case wire.ErrTextLineTooLong:
		return smtp.NewError(554, smtp.EnhancedCode{5, 6, 0}, "Message line too long")
	}
	return smtp.ErrorOf(err)
}

// runData hands the body to the session and returns one result per
// accepted recipient (all the same unless the session speaks LMTP).
func (s *session) runData(r io.Reader) []error {
	results := make([]error, len(s.rcpts))
	if ls := s.lmtpS; ls != nil && s.srv.LMTP {
		st := &LMTPStatus{errs: results, set: make([]bool, len(s.rcpts))}
		for _, rc := range s.rcpts {
			st.rcpts = append(st.rcpts, rc.Address)
		}
		err := s.callHook(func() error { return ls.LMTPData(s.ctx, r, st) })
		for i := range results {
			if !st.set[i] {
				results[i] = err
			}
		}
		return results
	}
	err := s.callHook(func() error { return s.sess.Data(s.ctx, r) })
	for i := range results {
		results[i] = err
	}
	return results
}

// finishTx sends the reply (or, for LMTP, replies) ending a transaction.
// A body that broke a limit overrides whatever the session said, so a
// message cut short is never acknowledged.
func (s *session) finishTx(bodyErr *smtp.Error, results []error) {
	n := 1
	if s.srv.LMTP {
		n = len(s.rcpts)
	}
	accepted := false
	for i := 0; i < n; i++ {
		var e *smtp.Error
		if bodyErr != nil {
			e = bodyErr
		} else if results[i] != nil {
			e = s.hookErr(results[i])
		}
		switch {
		case e == nil:
			accepted = true
			// The connection ID and the message's number in it name the
			// message uniquely for this server run.
			s.reply(250, smtp.EnhancedCode{2, 0, 0}, "OK: queued as "+s.conn.ID+"."+strconv.Itoa(s.txCount+1))
		case e.Code >= 200 && e.Code < 300:
			accepted = true
			s.replyErr(e)
		default:
			s.replyErr(e)
		}
	}
	if accepted {
		s.msgsAccepted++
		s.junk = 0
	}
	s.txCount++
	s.resetTx()
}

func (s *session) cmdStartTLS(arg string) {
	if !s.canStartTLS() {
		if s.conn.tls != nil {
			s.reply(503, smtp.EnhancedCode{5, 5, 1}, "TLS already active")
		} else {
			s.reply(502, smtp.EnhancedCode{5, 5, 1}, "STARTTLS not available")
		}
		return
	}
	if arg != "" {
		s.reply(501, smtp.EnhancedCode{5, 5, 4}, "STARTTLS takes no arguments")
		return
	}
	if s.from != nil || s.conn.identity != "" {
		s.reply(503, smtp.EnhancedCode{5, 5, 1}, "STARTTLS not allowed now")
		return
	}
	s.bw.Reply(220, smtp.EnhancedCode{2, 0, 0}, "Ready to start TLS")
	if err := s.bw.Flush(); err != nil {
		s.endErr = err
		s.peerDone = true
		s.closing = true
		return
	}
	// RFC 3207 4.2 and CVE-2011-0411: anything the client pipelined after
	// STARTTLS was sent in the clear; throw it away, never execute it.
	tlsConn := tls.Server(s.nc, s.srv.TLSConfig)
	hctx, cancel := context.WithTimeout(s.ctx, DefaultTLSHandshakeTimeout)
	err := tlsConn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		s.endErr = fmt.Errorf("starttls handshake: %w", err)
		s.peerDone = true
		s.closing = true
		return
	}
	s.closeMu.Lock()
	s.nc = tlsConn
	s.closeMu.Unlock()
	s.tc.Conn = tlsConn
	s.tc.readDeadline, s.tc.writeDeadline = time.Time{}, time.Time{}
	s.br.Reset(s.tc)
	s.bw.Reset(s.tc)
	st := tlsConn.ConnectionState()
	// RFC 3207 4.2: forget everything learnt before the handshake.
	s.resetTx()
	s.conn.tls = &st
	s.conn.helo = ""
	s.conn.esmtp = false
	s.bw.Enhanced = false
}

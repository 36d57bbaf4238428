package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/internal/testcert"
	"github.com/smtpkit/smtpkit/smtp"
)

// The test suite drives a real server over loopback TCP with scripts that
// read like protocol transcripts (see client.run). Every script runs in each
// transport mode that makes sense for it, through inModes.

type mode string

const (
	modePlain    mode = "plain"
	modeStartTLS mode = "starttls" // the client has said EHLO and STARTTLS; the script starts inside TLS
	modeTLS      mode = "tls"      // implicit TLS, tls.NewListener
	modeLMTP     mode = "lmtp"     // plain LMTP; scripts' EHLO becomes LHLO
)

var (
	smtpModes = []mode{modePlain, modeStartTLS, modeTLS}
	tlsModes  = []mode{modeStartTLS, modeTLS}
	allModes  = []mode{modePlain, modeStartTLS, modeTLS, modeLMTP}
)

// ioTimeout bounds every client read and write, so that a server that
// fails to answer fails the test instead of hanging it.
const ioTimeout = 10 * time.Second

var discardLogger = slog.New(slog.DiscardHandler)

// inModes runs f as a parallel subtest in each mode.
func inModes(t *testing.T, modes []mode, f func(t *testing.T, m mode)) {
	t.Helper()
	for _, m := range modes {
		t.Run(string(m), func(t *testing.T) {
			t.Parallel()
			f(t, m)
		})
	}
}

// testTLS returns a server config with a fresh self-signed certificate
// for 127.0.0.1 and mx.test, and a client config trusting it.
var testTLS = sync.OnceValues(func() (*tls.Config, *tls.Config) {
	c, err := testcert.New(testcert.Options{Names: []string{"mx.test", "127.0.0.1"}, CA: true})
	if err != nil {
		panic(err)
	}
	srv := &tls.Config{Certificates: []tls.Certificate{c.TLSCertificate()}}
	cli := &tls.Config{RootCAs: c.Pool(), ServerName: "127.0.0.1"}
	return srv, cli
})

// harness is one running server.
type harness struct {
	t     testing.TB
	mode  mode
	srv   *Server
	addr  string
	conns sync.Map // client address -> *countConn, the server's end

	done     chan struct{} // closed when Serve returns
	serveErr error
}

// serve starts srv on a loopback port in mode m; the test's cleanup closes
// it and checks that Serve returned ErrServerClosed.
func serve(t testing.TB, m mode, srv *Server) *harness {
	t.Helper()
	srvTLS, _ := testTLS()
	if srv.Hostname == "" {
		srv.Hostname = "mx.test"
	}
	if srv.Logger == nil {
		srv.Logger = discardLogger
	}
	switch m {
	case modeStartTLS:
		if srv.TLSConfig == nil {
			srv.TLSConfig = srvTLS
		}
	case modeLMTP:
		srv.LMTP = true
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, mode: m, srv: srv, addr: ln.Addr().String(), done: make(chan struct{})}
	var l net.Listener = &countListener{Listener: ln, h: h}
	if m == modeTLS {
		l = tls.NewListener(l, srvTLS)
	}
	go func() {
		h.serveErr = srv.Serve(l)
		close(h.done)
	}()
	t.Cleanup(func() {
		srv.Close()
		if err := h.wait(); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return h
}

// wait returns Serve's result once it has returned.
func (h *harness) wait() error {
	select {
	case <-h.done:
		return h.serveErr
	case <-time.After(ioTimeout):
		return errors.New("Serve did not return")
	}
}

// countListener wraps accepted connections in countConn.
type countListener struct {
	net.Listener
	h *harness
}

func (l *countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countConn{Conn: c}
	l.h.conns.Store(c.RemoteAddr().String(), cc)
	return cc, nil
}

// countConn counts the server's writes to the connection.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func (c *countConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// serverConn returns the server's end of cl's connection.
func (h *harness) serverConn(cl *client) *countConn {
	h.t.Helper()
	v, ok := h.conns.Load(cl.raw.LocalAddr().String())
	if !ok {
		h.t.Fatalf("no server connection for %v", cl.raw.LocalAddr())
	}
	return v.(*countConn)
}

// client is the test's end of a connection.
type client struct {
	t    testing.TB
	h    *harness
	raw  net.Conn // the TCP connection
	nc   net.Conn // raw, or TLS over it
	br   *bufio.Reader
	lmtp bool
}

// dial connects and reads the greeting, which must be 220; in STARTTLS
// mode it then says EHLO and STARTTLS, so that the caller starts inside
// TLS with a session that has been reset.
func (h *harness) dial() *client {
	h.t.Helper()
	c := h.dialRaw()
	c.expect("220 mx.test")
	if h.mode == modeStartTLS {
		c.startTLS()
	}
	return c
}

// dialRaw connects (and for implicit TLS, shakes hands) without reading.
func (h *harness) dialRaw() *client {
	h.t.Helper()
	raw, err := net.DialTimeout("tcp", h.addr, ioTimeout)
	if err != nil {
		h.t.Fatal(err)
	}
	c := &client{t: h.t, h: h, raw: raw, nc: raw, br: bufio.NewReader(raw), lmtp: h.mode == modeLMTP}
	h.t.Cleanup(func() { raw.Close() })
	if h.mode == modeTLS {
		c.handshake()
	}
	return c
}

func (c *client) handshake() {
	c.t.Helper()
	_, cliTLS := testTLS()
	tc := tls.Client(c.raw, cliTLS)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.nc = tc
	c.br = bufio.NewReader(tc)
}

func (c *client) startTLS() {
	c.t.Helper()
	c.run(`
		C: EHLO client.test
		S: 250-mx.test
		C: STARTTLS
		S: 220 2.0.0
	`)
	if c.br.Buffered() > 0 {
		c.t.Fatal("server sent more after 220 to STARTTLS")
	}
	c.handshake()
}

// write sends p in one write.
func (c *client) write(p string) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c.nc, p); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// readReply reads one reply, its lines joined by "\n".
func (c *client) readReply() (string, error) {
	c.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	var lines []string
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			if line != "" {
				return strings.Join(append(lines, line), "\n"), fmt.Errorf("partial line %q: %w", line, err)
			}
			return strings.Join(lines, "\n"), err
		}
		if !strings.HasSuffix(line, "\r\n") {
			return "", fmt.Errorf("reply line %q does not end in CRLF", line)
		}
		line = strings.TrimSuffix(line, "\r\n")
		if len(line) < 3 || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
			return "", fmt.Errorf("malformed reply line %q", line)
		}
		lines = append(lines, line)
		if len(line) == 3 || line[3] == ' ' {
			return strings.Join(lines, "\n"), nil
		}
	}
}

// expect reads a reply and checks that it starts with want.
func (c *client) expect(want string) string {
	c.t.Helper()
	got, err := c.readReply()
	if err != nil {
		c.t.Fatalf("want reply %q, got %q and %v", want, got, err)
	}
	if !strings.HasPrefix(got, want) {
		c.t.Fatalf("want reply %q, got %q", want, got)
	}
	return got
}

// expectEOF checks that the server closed the connection without sending
// anything more, and closes the client's end.
func (c *client) expectEOF() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := c.br.ReadByte()
	switch {
	case err == nil:
		rest, _ := c.br.Peek(c.br.Buffered())
		c.t.Fatalf("want end of stream, got %q", string(b)+string(rest))
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
	default:
		c.t.Fatalf("want end of stream, got %v", err)
	}
	c.nc.Close()
}

// run plays a transcript, one step a line (leading blanks are ignored):
//
//	C: text   a command line, sent with CRLF
//	W: text   raw bytes, no CRLF added; \r \n \t \\ \xHH are escapes
//	S: text   a reply, which must start with text (its lines joined by \n;
//	          escapes as in W:)
//	S: EOF    the server closed the connection
//	# text    a comment
//
// Consecutive C: and W: lines go out in a single write, as a pipelining
// client would send them. A W: line right after "C: BDAT n" must hold
// exactly n bytes. In LMTP mode, "EHLO" commands are sent as "LHLO".
func (c *client) run(script string) {
	c.t.Helper()
	var out strings.Builder
	bdat := -1
	flush := func() {
		if out.Len() > 0 {
			c.write(out.String())
			out.Reset()
		}
	}
	for n, line := range strings.Split(script, "\n") {
		line = strings.TrimLeft(line, " \t")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) < 3 || line[1:3] != ": " && line[1:] != ":" {
			c.t.Fatalf("script line %d: bad step %q", n, line)
		}
		kind, text := line[0], line[min(3, len(line)):]
		if kind == 'W' && bdat >= 0 {
			if got := len(unescape(text)); got != bdat {
				c.t.Fatalf("script line %d: BDAT %d followed by %d bytes", n, bdat, got)
			}
		}
		bdat = -1
		switch kind {
		case 'C':
			if c.lmtp && strings.HasPrefix(text, "EHLO ") {
				text = "LHLO " + text[5:]
			}
			if f := strings.Fields(text); len(f) >= 2 && f[0] == "BDAT" {
				if v, err := strconv.Atoi(f[1]); err == nil && v > 0 && v < 1<<20 {
					bdat = v
				}
			}
			out.WriteString(text + "\r\n")
		case 'W':
			out.WriteString(unescape(text))
		case 'S':
			flush()
			if text == "EOF" {
				c.expectEOF()
				continue
			}
			text = unescape(text)
			got, err := c.readReply()
			if err != nil || !strings.HasPrefix(got, text) {
				c.t.Fatalf("script line %d: want reply %q, got %q (%v)", n, text, got, err)
			}
		default:
			c.t.Fatalf("script line %d: bad step %q", n, line)
		}
	}
	flush()
}

func unescape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'r':
			b.WriteByte('\r')
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'x':
			v, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
			if err != nil {
				panic("bad escape in " + s)
			}
			b.WriteByte(byte(v))
			i += 2
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// quit says QUIT and waits for the server to close.
func (c *client) quit() {
	c.t.Helper()
	c.run(`
		C: QUIT
		S: 221
		S: EOF
	`)
}

// sendData sends a DATA body, dot-stuffing it; body must end in CRLF.
func (c *client) sendData(body string) {
	c.t.Helper()
	c.write(dotStuff(body) + ".\r\n")
}

func dotStuff(body string) string {
	var b strings.Builder
	for line := range strings.SplitAfterSeq(body, "\n") {
		if strings.HasPrefix(line, ".") {
			b.WriteByte('.')
		}
		b.WriteString(line)
	}
	return b.String()
}

// checkServes proves the server still works: a new client can deliver a
// message.
func (h *harness) checkServes() {
	h.t.Helper()
	c := h.dial()
	c.run(`
		C: EHLO again.test
		S: 250-mx.test
		C: MAIL FROM:<again@example.com>
		S: 250
		C: RCPT TO:<rcpt@example.com>
		S: 250
		C: DATA
		S: 354
		C: Subject: still here
		C: .
		S: 250
	`)
	c.quit()
}

// backend is a Handler that records what its sessions see. Its hooks
// react to the local part of addresses, so that scripts can ask for a
// behaviour: "reject" (550 5.1.1), "defer" (451 4.2.1 typed), "broken"
// (untyped error), "panic".
type backend struct {
	t testing.TB

	mu     sync.Mutex
	events []string
	msgs   []*message
	ctxs   []context.Context // contexts the hooks were given
	addrs  []smtp.Address    // every address MAIL and RCPT passed on
	closes chan error        // one value per Close call

	onConnect func(ctx context.Context, c *Conn) error
	onHello   func(ctx context.Context, name string) error
	onMail    func(ctx context.Context, from smtp.Address, o *smtp.MailOptions) error
	onData    func(ctx context.Context, r io.Reader) error // replaces the default reader; see setData
	onLMTP    func(ctx context.Context, r io.Reader, st *LMTPStatus) error
	auth      bool // sessions implement PasswordSession
	sasl      bool // sessions implement SASLSession with ANONYMOUS
	verify    bool // sessions implement VerifySession
}

// message is what a session saw of one delivered message.
type message struct {
	from     smtp.Address
	opts     smtp.MailOptions
	rcpts    []Recipient
	body     string
	helo     string
	tls      bool
	identity string
	remoteIP netip.Addr
	received string
}

func newBackend(t testing.TB) *backend {
	return &backend{t: t, closes: make(chan error, 100)}
}

func (b *backend) event(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.events = append(b.events, fmt.Sprintf(format, args...))
}

func (b *backend) record(ctx context.Context) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.ctxs = append(b.ctxs, ctx)
}

func (b *backend) addr(a smtp.Address) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addrs = append(b.addrs, a)
}

// Addrs returns the addresses MAIL and RCPT hooks were given.
func (b *backend) Addrs() []smtp.Address {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]smtp.Address(nil), b.addrs...)
}

// sessionEvents returns the events after the connection's greeting in a
// mode: STARTTLS mode's EHLO before TLS is left out.
func (b *backend) sessionEvents(m mode) []string {
	ev := b.Events()
	if len(ev) > 0 && ev[0] == "connect" {
		ev = ev[1:]
	}
	if m == modeStartTLS && len(ev) > 0 && ev[0] == "hello client.test" {
		ev = ev[1:]
	}
	return ev
}

// setData changes the Data hook while sessions may be running.
func (b *backend) setData(f func(ctx context.Context, r io.Reader) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onData = f
}

// Events returns what happened so far.
func (b *backend) Events() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.events...)
}

// Messages returns the messages delivered so far.
func (b *backend) Messages() []*message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*message(nil), b.msgs...)
}

// waitClose waits for a session's Close and returns its error.
func (b *backend) waitClose() error {
	b.t.Helper()
	select {
	case err := <-b.closes:
		return err
	case <-time.After(ioTimeout):
		b.t.Fatal("session not closed")
		return nil
	}
}

func (b *backend) NewSession(ctx context.Context, c *Conn) (Session, error) {
	b.record(ctx)
	b.event("connect")
	if b.onConnect != nil {
		if err := b.onConnect(ctx, c); err != nil {
			return nil, err
		}
	}
	ts := &testSession{b: b}
	switch {
	case b.auth:
		return authSession{ts}, nil
	case b.sasl:
		return saslSession{ts}, nil
	case b.verify:
		return verifySession{ts}, nil
	case b.onLMTP != nil:
		return lmtpSession{ts}, nil
	}
	return ts, nil
}

func behave(local string) error {
	switch {
	case strings.HasPrefix(local, "reject"):
		return smtp.NoSuchUser()
	case strings.HasPrefix(local, "defer"):
		return smtp.NewError(451, smtp.EnhancedCode{4, 2, 1}, "Mailbox busy")
	case strings.HasPrefix(local, "broken"):
		return errors.New("database unreachable")
	case strings.HasPrefix(local, "panic"):
		panic("hook panicked on purpose")
	}
	return nil
}

type testSession struct {
	b   *backend
	msg message
}

func (s *testSession) Hello(ctx context.Context, name string) error {
	s.b.record(ctx)
	s.b.event("hello %s", name)
	if s.b.onHello != nil {
		return s.b.onHello(ctx, name)
	}
	return nil
}

func (s *testSession) Mail(ctx context.Context, from smtp.Address, o *smtp.MailOptions) error {
	s.b.record(ctx)
	s.b.event("mail %s", from.Path())
	s.b.addr(from)
	if s.b.onMail != nil {
		if err := s.b.onMail(ctx, from, o); err != nil {
			return err
		}
	}
	if err := behave(from.Local); err != nil {
		return err
	}
	c := ConnFromContext(ctx)
	s.msg = message{from: from, opts: *o, helo: c.Hello(), tls: c.TLS() != nil, identity: c.AuthIdentity(), remoteIP: c.RemoteIP()}
	return nil
}

func (s *testSession) Rcpt(ctx context.Context, to smtp.Address, o *smtp.RcptOptions) error {
	s.b.record(ctx)
	s.b.event("rcpt %s", to.Path())
	s.b.addr(to)
	if err := behave(to.Local); err != nil {
		return err
	}
	s.msg.rcpts = append(s.msg.rcpts, Recipient{Address: to, Options: *o})
	return nil
}

func (s *testSession) Data(ctx context.Context, r io.Reader) error {
	s.b.record(ctx)
	s.b.event("data")
	s.b.mu.Lock()
	onData := s.b.onData
	s.b.mu.Unlock()
	if onData != nil {
		return onData(ctx, r)
	}
	body, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if err := behave(s.msg.from.Local); err != nil {
		return err
	}
	s.deliver(ctx, body)
	return nil
}

func (s *testSession) deliver(ctx context.Context, body []byte) {
	m := s.msg
	m.body = string(body)
	var addrs []smtp.Address
	for _, r := range m.rcpts {
		addrs = append(addrs, r.Address)
	}
	m.received = ConnFromContext(ctx).Received(&m.opts, addrs).String()
	s.b.mu.Lock()
	s.b.msgs = append(s.b.msgs, &m)
	s.b.mu.Unlock()
}

func (s *testSession) Reset(ctx context.Context) {
	s.b.record(ctx)
	s.b.event("reset")
	s.msg = message{}
}

func (s *testSession) Close(ctx context.Context, err error) {
	s.b.record(ctx)
	if err == nil {
		s.b.event("close")
	} else {
		s.b.event("close error")
	}
	s.b.closes <- err
}

type authSession struct{ *testSession }

// AuthPassword accepts user/secret, and "long" with a 3000-byte password.
func (s authSession) AuthPassword(ctx context.Context, identity, user, pass string) error {
	s.b.record(ctx)
	s.b.event("auth %q %q", identity, user)
	switch {
	case user == "user" && pass == "secret", user == "long" && pass == strings.Repeat("p", 3000):
		return nil
	case pass == "down":
		return errors.New("user database down")
	case pass == "weak":
		return smtp.NewError(534, smtp.EnhancedCode{5, 7, 9}, "Authentication mechanism is too weak")
	case pass == "wrapped":
		return fmt.Errorf("user %q: %w", user, ErrAuthFailed)
	}
	return ErrAuthFailed
}

type verifySession struct{ *testSession }

func (s verifySession) Verify(ctx context.Context, arg string) (string, error) {
	if arg == "nobody" {
		return "", smtp.NoSuchUser()
	}
	return "Jo User <" + arg + "@example.com>", nil
}

func (s verifySession) Expand(ctx context.Context, arg string) ([]string, error) {
	return []string{"<a@example.com>", "<b@example.com>"}, nil
}

type lmtpSession struct{ *testSession }

func (s lmtpSession) LMTPData(ctx context.Context, r io.Reader, st *LMTPStatus) error {
	s.b.event("lmtpdata")
	return s.b.onLMTP(ctx, r, st)
}

// equal fails the test when got and want differ.
func equal[T comparable](t testing.TB, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func equalSlices[T comparable](t testing.TB, what string, got, want []T) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
		return
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s = %#v, want %#v", what, got, want)
			return
		}
	}
}

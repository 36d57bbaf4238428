package server

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Extension names an ESMTP extension the server can advertise.
type Extension uint32

// Extensions. STARTTLS is offered when TLSConfig is set, AUTH when the
// session implements PasswordSession or SASLSession; the others are on
// unless listed in Server.DisableExtensions.
const (
	ExtPipelining          Extension = 1 << iota // RFC 2920
	Ext8BitMIME                                  // RFC 6152
	ExtSize                                      // RFC 1870
	ExtEnhancedStatusCodes                       // RFC 2034
	ExtSMTPUTF8                                  // RFC 6531
	ExtChunking                                  // RFC 3030 BDAT
	ExtBinaryMIME                                // RFC 3030, needs ExtChunking
	ExtDSN                                       // RFC 3461
	ExtStartTLS                                  // RFC 3207
	ExtAuth                                      // RFC 4954
)

// Defaults for the zero values of Server's limits.
const (
	DefaultMaxMessageBytes        = 10_240_000 // Postfix's message_size_limit
	DefaultMaxRecipients          = 1000       // RFC 5321 4.5.3.1.8 requires at least 100
	DefaultMaxLineLength          = 2048       // RFC 5321 4.5.3.1.4's 512, grown by extension parameters
	DefaultMaxTextLineLength      = 1000       // RFC 5321 4.5.3.1.6, counting CRLF
	DefaultMaxTransactions        = 1000
	DefaultMaxErrors              = 20 // Postfix's smtpd_hard_error_limit
	DefaultMaxCommandsBeforeHello = 10
	DefaultMaxJunkCommands        = 100 // Postfix's smtpd_junk_command_limit
	DefaultMaxConnections         = 1000
	DefaultMaxConnectionsPerIP    = 50               // Postfix's smtpd_client_connection_count_limit
	DefaultReadTimeout            = 5 * time.Minute  // RFC 5321 4.5.3.2.7
	DefaultDataTimeout            = 5 * time.Minute  // RFC 5321 4.5.3.2.7, waiting on each body read
	DefaultWriteTimeout           = 5 * time.Minute  // RFC 5321 4.5.3.2: the client's own wait
	DefaultTLSHandshakeTimeout    = 30 * time.Second //
	authLineLength                = 12288            // RFC 4954 4: AUTH lines servers must accept
	maxBDATChunk                  = 1 << 30          // bound on a single BDAT size argument
	lingerTimeout                 = 2 * time.Second  // how long a refused client may keep sending
	lingerBytes                   = 256 * 1024       // and how much of it is read before closing
	shutdownPoll                  = 50 * time.Millisecond
)

// Server accepts SMTP (or LMTP) connections and runs each through a Session
// from Handler. The zero value of every field is a safe default; no count
// limit is unbounded unless set negative.
type Server struct {
	// Addr is the address to listen on for ListenAndServe; "" means ":25".
	Addr string
	// Hostname is the name in the greeting, EHLO and trace headers; ""
	// means os.Hostname().
	Hostname string
	// Handler opens a Session per connection. It must be set.
	Handler Handler
	// TLSConfig enables STARTTLS, and is used by ListenAndServeTLS.
	TLSConfig *tls.Config
	// LMTP makes the server speak LMTP (RFC 2033) instead of SMTP.
	LMTP bool
	// AllowInsecureAuth offers AUTH without TLS. Off by default: a
	// password over plaintext is readable by anyone on the path.
	AllowInsecureAuth bool
	// DisableExtensions lists extensions not to advertise or accept.
	DisableExtensions Extension
	// Logger gets one line per session outcome; nil means slog.Default().
	Logger *slog.Logger
	// BaseContext returns the base context of connections accepted on l;
	// nil means context.Background().
	BaseContext func(l net.Listener) context.Context

	// MaxMessageBytes caps a message's body; zero or negative means
	// 10 240 000.
	MaxMessageBytes int64
	// MaxRecipients caps RCPTs per message (then 452 4.5.3); zero means
	// 1000, negative means no limit.
	MaxRecipients int
	// MaxLineLength caps a command line including CRLF; zero or negative
	// means 2048. RFC 5321 4.5.3.1.4 sets 512 but lets extensions lengthen
	// MAIL and RCPT, as DSN and AUTH= parameters do. AUTH lines may be
	// 12288 (RFC 4954 4) whatever this says.
	MaxLineLength int
	// MaxTextLineLength caps a body line including CRLF; zero or negative
	// means 1000.
	MaxTextLineLength int
	// MaxTransactions caps messages per connection (then 421); zero means
	// 1000, negative means no limit.
	MaxTransactions int
	// MaxErrors caps error replies per connection (then 421); zero means 20,
	// negative means no limit.
	MaxErrors int
	// MaxCommandsBeforeHello caps commands before HELO/EHLO (then 421);
	// zero means 10, negative means no limit.
	MaxCommandsBeforeHello int
	// MaxJunkCommands caps NOOP, RSET, VRFY, EXPN and HELP commands
	// between accepted messages (then 421), so that a client cannot hold a
	// connection forever without sending mail; zero means 100, negative
	// means no limit.
	MaxJunkCommands int
	// MaxConnections caps concurrent connections; zero means 1000,
	// negative means no limit.
	MaxConnections int
	// MaxConnectionsPerIP caps concurrent connections from one client
	// address; zero means 50, negative means no limit.
	MaxConnectionsPerIP int
	// MaxAuthFailures caps failed AUTH attempts per connection (then
	// 421); zero means 3, negative means no limit.
	MaxAuthFailures int
	// ReadTimeout bounds the wait for each command; zero means 5 minutes.
	ReadTimeout time.Duration
	// DataTimeout bounds each wait for body data; zero means 5 minutes.
	DataTimeout time.Duration
	// WriteTimeout bounds each write of replies; zero means 5 minutes.
	WriteTimeout time.Duration

	mu         sync.Mutex
	listeners  map[*net.Listener]struct{}
	sessions   map[*session]struct{}
	perIP      map[netip.Addr]int
	total      int
	inShutdown atomic.Bool
	closed     chan struct{}
	closeOnce  sync.Once
	handoff    chan *session // to a goroutine idle after its last session
	workers    atomic.Int64  // session goroutines alive, busy or idle
	idle       atomic.Int64  // of which waiting for a connection
	idSeq      atomic.Uint64
	idBase     string
	initOnce   sync.Once
	hostOnce   sync.Once
	host       string
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("smtp: server closed")

func (s *Server) init() {
	s.initOnce.Do(func() {
		s.listeners = map[*net.Listener]struct{}{}
		s.sessions = map[*session]struct{}{}
		s.perIP = map[netip.Addr]int{}
		s.closed = make(chan struct{})
		s.handoff = make(chan *session)
		s.idBase = strconv.FormatInt(time.Now().UnixNano()%(1<<40), 36)
	})
}

func (s *Server) hostname() string {
	s.hostOnce.Do(func() {
		s.host = s.Hostname
		if s.host == "" {
			h, err := os.Hostname()
			if err != nil || h == "" {
				h = "localhost"
			}
			s.host = h
		}
	})
	return s.host
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// limit reads a count limit: zero means def, negative means none.
func limit(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return math.MaxInt
	}
	return v
}

// orPos reads a length limit, which is never unbounded: a buffer must
// hold a whole line.
func orPos(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func orDur(v, def time.Duration) time.Duration {
	if v <= 0 {
		return def
	}
	return v
}

func (s *Server) maxMessageBytes() int64 {
	if s.MaxMessageBytes <= 0 {
		return DefaultMaxMessageBytes
	}
	return s.MaxMessageBytes
}

func (s *Server) enabled(e Extension) bool { return s.DisableExtensions&e == 0 }

// ListenAndServe listens on Addr and serves connections.
func (s *Server) ListenAndServe() error {
	if s.isClosed() {
		return ErrServerClosed
	}
	addr := s.Addr
	if addr == "" {
		addr = ":25"
	}
	l, err := Listen(addr)
	if err != nil {
		return err
	}
	return s.Serve(l)
}

// ListenAndServeTLS listens on Addr and serves connections over implicit
// TLS (RFC 8314, port 465 style). certFile and keyFile may be empty when
// TLSConfig already has certificates.
func (s *Server) ListenAndServeTLS(certFile, keyFile string) error {
	if s.isClosed() {
		return ErrServerClosed
	}
	cfg := &tls.Config{}
	if s.TLSConfig != nil {
		cfg = s.TLSConfig.Clone()
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return err
		}
		cfg.Certificates = append(cfg.Certificates, cert)
	}
	addr := s.Addr
	if addr == "" {
		addr = ":465"
	}
	l, err := Listen(addr)
	if err != nil {
		return err
	}
	return s.Serve(tls.NewListener(l, cfg))
}

// Serve accepts connections on l until Shutdown or Close, and always
// returns a non-nil error and closes l. A listener from tls.NewListener
// gives implicit TLS; one wrapped by ProxyListener reads a PROXY header
// first.
func (s *Server) Serve(l net.Listener) error {
	s.init()
	// Closed on every return, as net/http does: a listener Shutdown never
	// saw (Serve called after it) must not keep accepting into its backlog.
	defer l.Close()
	if s.Handler == nil {
		return errors.New("smtp: Server.Handler is nil")
	}
	if !s.trackListener(&l, true) {
		return ErrServerClosed
	}
	defer s.trackListener(&l, false)

	base := context.Background()
	if s.BaseContext != nil {
		base = s.BaseContext(l)
	}
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.isClosed() || s.inShutdown.Load() {
				return ErrServerClosed
			}
			// EMFILE and friends: back off instead of spinning.
			if isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.logger().Warn("accept", "err", err)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		ss := newSession(s, c, base)
		// Registered here, not in the session's goroutine, so that Close
		// and Shutdown never miss a connection already accepted.
		if !s.register(ss, true) {
			c.Close()
			continue
		}
		select {
		case s.handoff <- ss:
		default:
			go s.work(ss)
		}
	}
}

// workerIdle is how long a session's goroutine waits for the next
// connection before it exits.
const workerIdle = 5 * time.Second

// work serves ss, then serves the connections handed to it until none comes
// for workerIdle. A new goroutine starts on a small stack and grows it by
// copying within the first replies of every connection; reusing one whose
// stack has already grown took 3-5% of the CPU off each short connection
// (bench/run.sh, 1 KiB cells). The goroutines idle at once are at most the
// peak of concurrent sessions, and they go when the server closes.
func (s *Server) work(ss *session) {
	s.workers.Add(1)
	defer s.workers.Add(-1)
	var idle *time.Timer
	for {
		ss.serve()
		if idle == nil {
			idle = time.NewTimer(workerIdle)
		} else {
			idle.Reset(workerIdle)
		}
		s.idle.Add(1)
		select {
		case ss = <-s.handoff:
			s.idle.Add(-1)
		case <-idle.C:
			s.idle.Add(-1)
			return
		case <-s.closed:
			s.idle.Add(-1)
			idle.Stop()
			return
		}
	}
}

func isTemporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) trackListener(l *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.isClosed() || s.inShutdown.Load() {
			return false
		}
		s.listeners[l] = struct{}{}
	} else {
		delete(s.listeners, l)
	}
	return true
}

func (s *Server) isClosed() bool {
	if s.closed == nil {
		return false
	}
	select {
	case <-s.closed:
		return true
	default:
		return false
	}
}

// admit counts a new connection against the limits; it reports whether
// the connection may stay.
func (s *Server) admit(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	maxTotal := limit(s.MaxConnections, DefaultMaxConnections)
	maxIP := limit(s.MaxConnectionsPerIP, DefaultMaxConnectionsPerIP)
	ip := ss.conn.RemoteIP()
	if s.total >= maxTotal || s.perIP[ip] >= maxIP {
		return false
	}
	s.total++
	s.perIP[ip]++
	ss.counted = true
	return true
}

// register adds or removes a session; adding fails once Close was called.
func (s *Server) register(ss *session, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.isClosed() {
			return false
		}
		s.sessions[ss] = struct{}{}
		return true
	}
	delete(s.sessions, ss)
	if ss.counted {
		s.total--
		ip := ss.conn.RemoteIP()
		if s.perIP[ip]--; s.perIP[ip] <= 0 {
			delete(s.perIP, ip)
		}
	}
	return true
}

// Shutdown stops the server gracefully: it closes the listeners, sends
// "421 4.3.2" to sessions waiting for a command outside a transaction and
// closes them, lets transactions in flight finish (each is then told 421),
// and returns when no session is left or ctx is done, in which case it
// closes everything that remains and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.inShutdown.Store(true)
	s.closeListeners()
	ticker := time.NewTicker(shutdownPoll)
	defer ticker.Stop()
	for {
		s.mu.Lock()
		// A Serve loop still running may yet register a connection it
		// has just accepted, so it counts until it returns.
		n := len(s.sessions) + len(s.listeners)
		for ss := range s.sessions {
			ss.interruptIfIdle()
		}
		s.mu.Unlock()
		if n == 0 {
			s.closeOnce.Do(func() { close(s.closed) })
			return nil
		}
		select {
		case <-ctx.Done():
			s.Close()
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// Close closes the listeners and every connection at once, and cancels
// the contexts of their hooks.
func (s *Server) Close() error {
	s.init()
	s.inShutdown.Store(true)
	s.closeOnce.Do(func() { close(s.closed) })
	err := s.closeListeners()
	s.mu.Lock()
	for ss := range s.sessions {
		ss.abort()
	}
	s.mu.Unlock()
	return err
}

func (s *Server) closeListeners() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for l := range s.listeners {
		if e := (*l).Close(); e != nil && err == nil {
			err = e
		}
	}
	return err
}

func (s *Server) newID() string {
	return s.idBase + strconv.FormatUint(s.idSeq.Add(1), 36)
}

// Listen listens on a TCP address for SMTP. TCP keep-alives are off: the
// read timeouts already end sessions with dead peers, and turning them on
// costs system calls at every accepted connection.
func Listen(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(context.Background(), "tcp", addr)
}

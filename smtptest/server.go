package smtptest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/internal/testcert"
	"github.com/smtpkit/smtpkit/server"
)

// Mode is the transport a test Server listens with.
type Mode int

const (
	// ModePlain is SMTP over plain TCP. STARTTLS is offered only if
	// Config.TLSConfig is set.
	ModePlain Mode = iota
	// ModeSTARTTLS is SMTP that offers STARTTLS (RFC 3207) with a
	// self-signed certificate; a Client from Server.Dial upgrades in Hello.
	ModeSTARTTLS
	// ModeImplicitTLS is SMTP inside TLS from the first byte (RFC 8314).
	ModeImplicitTLS
	// ModeLMTP is LMTP (RFC 2033) over plain TCP.
	ModeLMTP
)

// Modes returns every Mode, for tests that run in each transport:
//
//	for _, m := range smtptest.Modes() {
//		t.Run(m.String(), func(t *testing.T) {
//			srv := smtptest.NewServer(t, h, smtptest.WithMode(m))
//			...
//		})
//	}
func Modes() []Mode { return []Mode{ModePlain, ModeSTARTTLS, ModeImplicitTLS, ModeLMTP} }

func (m Mode) String() string {
	switch m {
	case ModePlain:
		return "plain"
	case ModeSTARTTLS:
		return "starttls"
	case ModeImplicitTLS:
		return "implicit-tls"
	case ModeLMTP:
		return "lmtp"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// An Option configures a Server before it starts.
type Option func(*Server)

// WithMode sets the transport Start uses; the default is ModePlain.
func WithMode(m Mode) Option { return func(s *Server) { s.mode = m } }

// WithConfig calls f on the underlying server.Server before it starts, to
// set limits, timeouts or extensions in a NewServer one-liner.
func WithConfig(f func(*server.Server)) Option { return func(s *Server) { f(s.Config) } }

// closeTimeout bounds how long Close waits for sessions to end before it
// cuts them off.
const closeTimeout = 5 * time.Second

// Server is an SMTP server listening on a loopback address, for tests.
type Server struct {
	// Addr is the "127.0.0.1:port" the server listens on.
	Addr string
	// Listener is the listener Serve accepts on: a TLS listener in
	// ModeImplicitTLS once started.
	Listener net.Listener
	// Config is the server being tested. Its fields may be changed between
	// NewUnstartedServer and Start. Its Hostname defaults to "localhost"
	// and its Logger writes to the test's log.
	Config *server.Server
	// TLS is the server's TLS configuration, with a self-signed
	// certificate for localhost, 127.0.0.1 and ::1. It is set by StartTLS,
	// StartImplicitTLS, Certificate and ClientTLSConfig.
	TLS *tls.Config

	t         testing.TB
	mode      Mode
	cert      *x509.Certificate
	logw      *testLogWriter
	started   bool
	serveDone chan struct{}
	closeOnce sync.Once
}

// NewServer starts a server for h on 127.0.0.1 and closes it when the test
// ends. t may be nil outside tests (in an Example): failures then panic and
// the caller must call Close.
func NewServer(t testing.TB, h server.Handler, opts ...Option) *Server {
	t = orPanicTB(t)
	t.Helper()
	s := NewUnstartedServer(t, h, opts...)
	s.Start()
	return s
}

// NewUnstartedServer returns a server for h listening on 127.0.0.1 but not
// yet serving, so that the test can change Config first; call Start,
// StartTLS or StartImplicitTLS next. Connections made before the start wait
// for it.
func NewUnstartedServer(t testing.TB, h server.Handler, opts ...Option) *Server {
	t = orPanicTB(t)
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	s := &Server{
		Addr:      l.Addr().String(),
		Listener:  l,
		t:         t,
		logw:      &testLogWriter{t: t},
		serveDone: make(chan struct{}),
	}
	var logger *slog.Logger
	if _, ok := t.(panicTB); ok {
		logger = slog.New(slog.DiscardHandler)
	} else {
		logger = slog.New(slog.NewTextHandler(s.logw, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s.Config = &server.Server{Handler: h, Hostname: "localhost", Logger: logger}
	for _, o := range opts {
		o(s)
	}
	t.Cleanup(s.Close)
	return s
}

// Start serves in the Mode given by WithMode, ModePlain by default.
func (s *Server) Start() {
	s.t.Helper()
	if s.started {
		s.t.Fatalf("smtptest: server already started")
	}
	s.started = true
	switch s.mode {
	case ModeSTARTTLS:
		s.ensureTLS()
		if s.Config.TLSConfig == nil {
			s.Config.TLSConfig = s.TLS
		}
	case ModeImplicitTLS:
		s.ensureTLS()
		if s.Config.TLSConfig == nil {
			s.Config.TLSConfig = s.TLS
		}
		s.Listener = tls.NewListener(s.Listener, s.Config.TLSConfig)
	case ModeLMTP:
		s.Config.LMTP = true
	}
	go func() {
		defer close(s.serveDone)
		err := s.Config.Serve(s.Listener)
		if err != nil && !errors.Is(err, server.ErrServerClosed) {
			s.logw.Write([]byte("smtptest: Serve: " + err.Error()))
		}
	}()
}

// StartTLS serves SMTP offering STARTTLS with the self-signed certificate.
func (s *Server) StartTLS() {
	s.t.Helper()
	s.mode = ModeSTARTTLS
	s.Start()
}

// StartImplicitTLS serves SMTP inside TLS with the self-signed certificate.
func (s *Server) StartImplicitTLS() {
	s.t.Helper()
	s.mode = ModeImplicitTLS
	s.Start()
}

// Mode returns the transport the server uses (or will use once started).
func (s *Server) Mode() Mode { return s.mode }

// Close stops the server and waits for its sessions to end, so that
// afterwards every Session.Close hook has run and a Recorder is complete.
// Idle sessions are told 421 and closed, which takes until their clients
// hang up or the server's linger time passes, so close Clients first (as
// t.Cleanup does, in reverse order). Sessions still running after 5
// seconds are cut off. Close may be called more than once; NewServer
// registers it with t.Cleanup.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		if !s.started {
			s.Listener.Close()
			s.logw.stop()
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		if err := s.Config.Shutdown(ctx); err != nil {
			s.logw.Write([]byte("smtptest: sessions still running after " + closeTimeout.String() + "; closing them"))
			s.Config.Close()
		}
		<-s.serveDone
		// Session goroutines cut off by Close may still log; the test may
		// be over by then, and testing.T panics on a late Log.
		s.logw.stop()
	})
}

// Dial connects a Client to the server in its mode: over TLS in
// ModeImplicitTLS, speaking LMTP when Config.LMTP is set, and upgrading
// with STARTTLS in Hello in ModeSTARTTLS. It does not read the greeting.
func (s *Server) Dial(t testing.TB) *Client {
	t = orPanicTB(t)
	t.Helper()
	var c *Client
	if s.mode == ModeImplicitTLS {
		c = DialTLS(t, s.Addr, s.ClientTLSConfig())
	} else {
		c = Dial(t, s.Addr)
	}
	c.LMTP = s.Config.LMTP
	if s.mode == ModeSTARTTLS {
		c.autoTLS = s.ClientTLSConfig()
	}
	return c
}

// SendMail sends one message through a Client from Dial; see the
// package-level SendMail.
func (s *Server) SendMail(t testing.TB, from string, to []string, msg []byte) error {
	t = orPanicTB(t)
	t.Helper()
	return s.Dial(t).SendMail(from, to, msg)
}

// Certificate returns the server's self-signed certificate.
func (s *Server) Certificate() *x509.Certificate {
	s.ensureTLS()
	return s.cert
}

// ClientTLSConfig returns a new client configuration that trusts the
// server's certificate, with ServerName "localhost".
func (s *Server) ClientTLSConfig() *tls.Config {
	s.ensureTLS()
	pool := x509.NewCertPool()
	pool.AddCert(s.cert)
	return &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}
}

func (s *Server) ensureTLS() {
	if s.TLS != nil {
		return
	}
	s.t.Helper()
	// It is its own trust anchor, hence a CA: verifiers other than Go's
	// may insist on that. Callers outside this module may rely on the ten
	// years of validity it has always had.
	c, err := testcert.New(testcert.Options{
		Names:    []string{"localhost", "127.0.0.1", "::1"},
		CA:       true,
		NotAfter: time.Now().AddDate(10, 0, 0),
	})
	if err != nil {
		s.t.Fatalf("smtptest: generating certificate: %v", err)
	}
	s.cert = c.Leaf
	s.TLS = &tls.Config{Certificates: []tls.Certificate{c.TLSCertificate()}, MinVersion: tls.VersionTLS12}
}

// testLogWriter sends the server's log lines to t.Log until stop, after
// which they are dropped: testing.T panics on a Log after the test ends.
type testLogWriter struct {
	mu   sync.RWMutex
	t    testing.TB
	done bool
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testLogWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// panicTB stands in for a nil testing.TB outside tests: a failure panics
// with its message, and nothing is cleaned up automatically. Embedding the
// interface satisfies its unexported method; only the methods below are
// ever called.
type panicTB struct{ testing.TB }

func orPanicTB(t testing.TB) testing.TB {
	if t == nil {
		return panicTB{}
	}
	return t
}

func (panicTB) Helper()                           {}
func (panicTB) Cleanup(func())                    {}
func (panicTB) Log(...any)                        {}
func (panicTB) Logf(string, ...any)               {}
func (panicTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (panicTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }
func (panicTB) Errorf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// Package daemon wires the smtpkit command's "serve" mode: listeners, TLS,
// users, and the handler that stores or discards each message.
package daemon

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
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/smtpkit/smtpkit/maildir"
	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
)

// Config is what the serve command's flags set.
type Config struct {
	Listen     []string // SMTP with optional STARTTLS
	TLSListen  []string // implicit TLS
	LMTPListen []string
	DataDir    string
	Hostname   string
	TLSCert    string
	TLSKey     string
	UsersFile  string
	MaxSize    int64
	// MinFree is the free space the data directory must have for MAIL to
	// be accepted (then 452 4.3.1), as Postfix's queue_minfree; negative
	// means 1.5 times the message size limit, zero no check.
	MinFree      int64
	Discard      bool
	NoSync       bool // for benchmarks only: no fsync before 250
	MaxConns     int
	MaxConnsIP   int
	InsecureAuth bool
	// ProxyFrom lists the load balancers trusted to send a PROXY protocol
	// header; when set, every listener accepts only them.
	ProxyFrom []netip.Prefix
	// Relay, when its Target is set, queues mail and relays it instead of
	// storing it in the Maildir.
	Relay  RelayConfig
	Logger *slog.Logger
	// Ready, if set, is called with the bound addresses once listening.
	Ready func(addrs []net.Addr)
}

// Run serves until ctx is cancelled, then shuts down gracefully.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.Listen)+len(cfg.TLSListen)+len(cfg.LMTPListen) == 0 {
		cfg.Listen = []string{"127.0.0.1:2525"}
	}
	// Check the configuration before anything touches the disk, so that a
	// typo does not leave a data directory behind.
	var tlsCfg *tls.Config
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	} else if len(cfg.TLSListen) > 0 {
		return errors.New("--tls-listen needs --tls-cert and --tls-key")
	}
	h := &handler{log: log, discard: cfg.Discard, dataDir: cfg.DataDir, minFree: cfg.MinFree}
	if h.minFree < 0 {
		maxSize := cfg.MaxSize
		if maxSize <= 0 {
			maxSize = server.DefaultMaxMessageBytes
		}
		h.minFree = maxSize + maxSize/2
	}
	if cfg.UsersFile != "" {
		users, err := LoadUsers(cfg.UsersFile)
		if err != nil {
			return err
		}
		h.users = users
		go h.dummyHash() // warm it, so the first unknown user is not answered slower
	}
	var rl *relay
	if cfg.Relay.Target != "" && !cfg.Discard {
		var err error
		if rl, err = openRelay(cfg.Relay, cfg.DataDir, cfg.Hostname, cfg.NoSync, log); err != nil {
			return err
		}
		defer rl.close()
		h.relay = rl
	} else if !cfg.Discard {
		dir := filepath.Join(cfg.DataDir, "maildir")
		md, err := maildir.Open(dir, maildir.Options{NoSync: cfg.NoSync, Hostname: cfg.Hostname})
		if err != nil {
			return fmt.Errorf("maildir: %w", err)
		}
		h.md = md
	}

	newServer := func(lmtp bool) *server.Server {
		return &server.Server{
			Hostname:            cfg.Hostname,
			Handler:             h,
			TLSConfig:           tlsCfg,
			LMTP:                lmtp,
			MaxMessageBytes:     cfg.MaxSize,
			MaxConnections:      cfg.MaxConns,
			MaxConnectionsPerIP: cfg.MaxConnsIP,
			AllowInsecureAuth:   cfg.InsecureAuth,
			Logger:              log,
		}
	}
	smtpSrv, lmtpSrv := newServer(false), newServer(true)

	type bound struct {
		srv *server.Server
		l   net.Listener
	}
	var ls []bound
	closeAll := func() {
		for _, b := range ls {
			b.l.Close()
		}
	}
	listen := func(addrs []string, srv *server.Server, implicitTLS bool) error {
		for _, a := range addrs {
			l, err := server.Listen(a)
			if err != nil {
				return err
			}
			if len(cfg.ProxyFrom) > 0 {
				// Under TLS: the header comes before the handshake.
				l = server.ProxyListener(l, cfg.ProxyFrom)
			}
			if implicitTLS {
				l = tls.NewListener(l, tlsCfg)
			}
			ls = append(ls, bound{srv, l})
		}
		return nil
	}
	if err := listen(cfg.Listen, smtpSrv, false); err != nil {
		closeAll()
		return err
	}
	if err := listen(cfg.TLSListen, smtpSrv, true); err != nil {
		closeAll()
		return err
	}
	if err := listen(cfg.LMTPListen, lmtpSrv, false); err != nil {
		closeAll()
		return err
	}
	var addrs []net.Addr
	for _, b := range ls {
		addrs = append(addrs, b.l.Addr())
		log.Info("listening", "addr", b.l.Addr().String(), "lmtp", b.srv.LMTP)
	}
	if cfg.Ready != nil {
		cfg.Ready(addrs)
	}
	// Delivery runs until the listeners have stopped taking mail, so a
	// message accepted during the graceful stop is still scheduled.
	relayCtx, stopRelay := context.WithCancel(context.Background())
	relayDone := make(chan struct{})
	if rl != nil {
		go func() { rl.run(relayCtx, cfg.DataDir); close(relayDone) }()
	} else {
		close(relayDone)
	}
	defer func() { stopRelay(); <-relayDone }()
	errc := make(chan error, len(ls))
	for _, b := range ls {
		go func() { errc <- b.srv.Serve(b.l) }()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, server.ErrServerClosed) {
			smtpSrv.Close()
			lmtpSrv.Close()
			return err
		}
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range []*server.Server{smtpSrv, lmtpSrv} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(sctx); err != nil {
				// Those clients got no 250, so they will send again.
				log.Warn("shutdown: closed connections still in a transaction", "err", err)
			}
		}()
	}
	wg.Wait()
	return nil
}

// ParsePrefix reads an address ("10.0.0.7", "::1") or a prefix
// ("10.0.0.0/8"); an address stands for itself alone.
func ParsePrefix(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// LoadUsers reads "user:bcrypt-hash" lines; blank lines and lines starting
// with '#' are skipped, and spaces around the user and the hash ignored. A
// user listed twice is an error, not a silent override.
func LoadUsers(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		user, hash = strings.TrimSpace(user), strings.TrimSpace(hash)
		if !ok || user == "" {
			return nil, fmt.Errorf("%s:%d: want user:bcrypt-hash", path, n)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%s:%d: %v", path, n, err)
		}
		if _, dup := users[user]; dup {
			return nil, fmt.Errorf("%s:%d: user %q listed twice", path, n, user)
		}
		users[user] = []byte(hash)
	}
	return users, sc.Err()
}

type handler struct {
	log     *slog.Logger
	md      *maildir.Dir
	relay   *relay
	users   map[string][]byte
	discard bool
	dataDir string
	minFree int64 // bytes the data directory must have free at MAIL; 0: no check

	dummyOnce sync.Once
	dummy     []byte
}

func (h *handler) NewSession(ctx context.Context, c *server.Conn) (server.Session, error) {
	s := &session{h: h, conn: c}
	if h.users != nil {
		return &authSession{s}, nil
	}
	return s, nil
}

type session struct {
	h     *handler
	conn  *server.Conn
	from  smtp.Address
	opts  smtp.MailOptions
	rcpts []server.Recipient
}

// authSession adds AUTH to a session when a users file is configured.
type authSession struct{ *session }

// dummyHash returns the hash that unknown users' passwords are compared
// against, so that a reply's timing does not tell which user names exist.
// It has the highest cost among the users' hashes (a cheaper one would
// answer unknown users faster). Run makes it in the background, so that
// start-up does not wait for it.
func (h *handler) dummyHash() []byte {
	h.dummyOnce.Do(func() {
		cost := bcrypt.MinCost
		for _, hash := range h.users {
			if c, err := bcrypt.Cost(hash); err == nil && c > cost {
				cost = c
			}
		}
		h.dummy, _ = bcrypt.GenerateFromPassword([]byte("smtpkit-dummy"), cost)
	})
	return h.dummy
}

func (s *authSession) AuthPassword(ctx context.Context, identity, user, pass string) error {
	if identity != "" && identity != user {
		return smtp.NewError(535, smtp.EnhancedCode{5, 7, 8}, "Authorization identity not permitted")
	}
	hash, ok := s.h.users[user]
	if !ok {
		hash = s.h.dummyHash()
	}
	if err := bcrypt.CompareHashAndPassword(hash, []byte(pass)); err != nil || !ok {
		return server.ErrAuthFailed
	}
	return nil
}

func (s *session) Mail(ctx context.Context, from smtp.Address, opts *smtp.MailOptions) error {
	// No open relay: only loopback clients and authenticated users.
	if ip := s.conn.RemoteIP(); !ip.IsLoopback() && s.conn.AuthIdentity() == "" {
		return smtp.NewError(530, smtp.EnhancedCode{5, 7, 0}, "Authentication required")
	}
	// Refuse at MAIL, while the client can still go elsewhere, rather than
	// take a message the disk cannot hold (which would be refused only
	// after its last byte, and may leave dead space in the queue).
	if !s.h.discard && s.h.minFree > 0 {
		if free, ok := freeSpace(s.h.dataDir); ok && free < s.h.minFree {
			return smtp.NewError(452, smtp.EnhancedCode{4, 3, 1}, "Insufficient system storage")
		}
	}
	s.from, s.opts = from, *opts
	return nil
}

func (s *session) Rcpt(ctx context.Context, to smtp.Address, opts *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, server.Recipient{Address: to, Options: *opts})
	return nil
}

func (s *session) Data(ctx context.Context, r io.Reader) error {
	if s.h.discard {
		_, err := io.Copy(io.Discard, r)
		return err
	}
	addrs := make([]smtp.Address, len(s.rcpts))
	for i, rc := range s.rcpts {
		addrs[i] = rc.Address
	}
	hdr := s.conn.Received(&s.opts, addrs).String()
	if s.h.relay != nil {
		return s.h.relay.enqueue(ctx, s.conn, s.from, s.opts, s.rcpts, hdr, r)
	}
	name, err := s.h.md.Deliver(ctx, []byte(hdr), r)
	if err != nil {
		return err
	}
	s.h.log.Debug("delivered", "id", s.conn.ID, "file", name)
	return nil
}

func (s *session) Reset(ctx context.Context) {
	s.from, s.opts, s.rcpts = smtp.Address{}, smtp.MailOptions{}, s.rcpts[:0]
}

func (s *session) Close(ctx context.Context, err error) {}

package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smtpkit/smtpkit/delivery"
	"github.com/smtpkit/smtpkit/delivery/mx"
	"github.com/smtpkit/smtpkit/delivery/remote"
	"github.com/smtpkit/smtpkit/delivery/tlspolicy"
	"github.com/smtpkit/smtpkit/internal/queuectl"
	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/queue/spool"
	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
)

// RelayConfig is the relaying side of serve: where mail goes once queued.
type RelayConfig struct {
	// Target is "mx" for each domain's MX hosts, or a smarthost URL:
	// smtp://user:pass@host:587 (STARTTLS required) or smtps://... .
	// Empty means no relay: mail is stored in the Maildir.
	Target string
	// DNS is the resolver "host:port"; empty means /etc/resolv.conf's.
	DNS string
	// MXPort is the port MX hosts are reached on; zero means 25.
	MXPort int
	// CAFile, if set, is a PEM bundle trusted (besides the system's) for
	// smarthosts and MTA-STS hosts.
	CAFile string
	// MinBackoff, MaxBackoff, Lifetime and DelayWarning tune retries; zero
	// means the delivery package's defaults (5m, 4h, 5 days, never).
	MinBackoff, MaxBackoff, Lifetime, DelayWarning time.Duration
	// MaxHops refuses messages with more Received: fields (mail loops);
	// zero means 50.
	MaxHops int
	// MTASTSPort is the HTTPS port MTA-STS policies are fetched from;
	// zero means 443. Policy hosts are resolved through DNS above.
	MTASTSPort int
}

type relay struct {
	q      *spool.Spool
	sched  *delivery.Scheduler
	closer func()
	log    *slog.Logger
	hops   int
}

func openRelay(rc RelayConfig, dataDir, hostname string, noSync bool, log *slog.Logger) (*relay, error) {
	var roots *x509.CertPool
	if rc.CAFile != "" {
		pem, err := os.ReadFile(rc.CAFile)
		if err != nil {
			return nil, err
		}
		roots, err = x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: no PEM certificates", rc.CAFile)
		}
	}
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	var tr delivery.Transport
	var closeT func()
	switch {
	case rc.Target == "mx":
		res := &mx.Resolver{Server: rc.DNS}
		t := &remote.MX{Resolver: res, Port: rc.MXPort, LocalName: hostname,
			Policy: &tlspolicy.Policy{Resolver: res, Port: rc.MXPort, RootCAs: roots, HTTPClient: stsClient(res, rc.MTASTSPort, roots)}}
		tr, closeT = t, t.Close
	case strings.HasPrefix(rc.Target, "smtp://") || strings.HasPrefix(rc.Target, "smtps://"):
		u, err := url.Parse(rc.Target)
		if err != nil {
			return nil, fmt.Errorf("--relay: %w", err)
		}
		host := u.Host
		if u.Port() == "" {
			port := "587"
			if u.Scheme == "smtps" {
				port = "465"
			}
			host = net.JoinHostPort(u.Hostname(), port)
		}
		t := &remote.Smarthost{Addr: host, ImplicitTLS: u.Scheme == "smtps", LocalName: hostname,
			TLSConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}
		if u.User != nil {
			t.Username = u.User.Username()
			t.Password, _ = u.User.Password()
		}
		tr, closeT = t, t.Close
	default:
		return nil, fmt.Errorf("--relay: want mx, smtp://... or smtps://..., not %q", rc.Target)
	}
	q, err := spool.Open(queuectl.QueueDir(dataDir), spool.Options{NoSync: noSync, Logger: log})
	if errors.Is(err, spool.ErrLocked) {
		return nil, fmt.Errorf("queue in %s is in use by another smtpkit", dataDir)
	}
	if err != nil {
		return nil, err
	}
	s := &delivery.Scheduler{Queue: q, Transport: tr, Hostname: hostname, Logger: log,
		MinBackoff: rc.MinBackoff, MaxBackoff: rc.MaxBackoff, Lifetime: rc.Lifetime, DelayWarning: rc.DelayWarning}
	return &relay{q: q, sched: s, closer: closeT, log: log, hops: rc.MaxHops}, nil
}

// run delivers and answers queue commands until ctx is done.
func (r *relay) run(ctx context.Context, dataDir string) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := r.sched.Run(ctx); err != nil {
			r.log.Error("delivery", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		h := &queuectl.Handler{Queue: r.q, Sched: r.sched}
		if err := queuectl.Serve(ctx, queuectl.SocketPath(dataDir), h, r.log); err != nil {
			r.log.Error("queue control socket", "err", err)
		}
	}()
	go func() {
		// Old segments held by long-deferred messages are copied forward
		// now and then, so the spool does not grow without bound.
		t := time.NewTicker(10 * time.Minute)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := r.q.Compact(ctx, 4); err != nil {
					r.log.Warn("spool compaction", "err", err)
				}
			}
		}
	}()
	wg.Wait()
}

func (r *relay) close() {
	r.closer()
	r.q.Close()
}

// enqueue stores a message durably and schedules it; when it returns nil
// the server may answer 250.
func (r *relay) enqueue(ctx context.Context, c *server.Conn, from smtp.Address, opts smtp.MailOptions, rcpts []server.Recipient, received string, body io.Reader) error {
	env := &queue.Envelope{From: from, MailOptions: opts, Received: time.Now(),
		Client: c.Hello() + " [" + c.RemoteIP().String() + "]"}
	for _, rc := range rcpts {
		env.Recipients = append(env.Recipients, queue.Recipient{Address: rc.Address, Options: rc.Options})
	}
	hc := &delivery.HopCounter{R: body, Max: r.hops}
	id, err := r.q.Put(ctx, env, io.MultiReader(strings.NewReader(received), hc))
	if err != nil {
		return err
	}
	r.sched.Notify(id)
	r.log.Debug("queued", "id", id, "session", c.ID, "rcpts", len(rcpts))
	return smtp.NewError(250, smtp.EnhancedCode{2, 0, 0}, "OK: queued as "+id)
}

// stsClient fetches MTA-STS policies, resolving policy hosts through the
// same resolver as MX lookups (so one --dns serves all), following no
// redirects (RFC 8461 3.3).
func stsClient(res *mx.Resolver, port int, roots *x509.CertPool) *http.Client {
	if port == 0 {
		port = 443
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, _, err := net.SplitHostPort(addr)
				if err != nil {
					return nil, err
				}
				ips, _, err := res.LookupAddrs(ctx, host)
				if err != nil {
					return nil, err
				}
				var last error
				for _, ip := range ips {
					c, err := dialer.DialContext(ctx, "tcp", net.JoinHostPort(ip.String(), strconv.Itoa(port)))
					if err == nil {
						return c, nil
					}
					last = err
				}
				return nil, last
			},
		},
	}
}

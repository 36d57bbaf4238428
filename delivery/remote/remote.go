// Package remote delivers over SMTP to other servers: to each domain's MX
// hosts, or through one smarthost. Both keep connections open between
// messages to the same host, and send each domain's recipients in one
// transaction.
package remote

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/smtpkit/smtpkit/client"
	"github.com/smtpkit/smtpkit/delivery"
	"github.com/smtpkit/smtpkit/delivery/mx"
	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/smtp"
)

const (
	dialTimeout = 30 * time.Second
	idleTimeout = 30 * time.Second
	maxIdle     = 32 // idle connections kept per host: above DefaultDomainConcurrency
	maxReuse    = 100
)

// pool keeps idle client connections per destination, so that a burst of
// messages to one host costs one TCP and TLS handshake, not one each.
type pool struct {
	mu   sync.Mutex
	idle map[string][]*pooled
}

type pooled struct {
	c     *client.Client
	since time.Time
	uses  int
	mta   string
}

func (p *pool) get(key string) *pooled {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		l := p.idle[key]
		if len(l) == 0 {
			return nil
		}
		pc := l[len(l)-1]
		p.idle[key] = l[:len(l)-1]
		if time.Since(pc.since) < idleTimeout {
			return pc
		}
		go pc.c.Close()
	}
}

func (p *pool) put(key string, pc *pooled) {
	pc.uses++
	if pc.uses >= maxReuse {
		go pc.c.Quit(context.Background())
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[string][]*pooled{}
	}
	if len(p.idle[key]) >= maxIdle {
		go pc.c.Quit(context.Background())
		return
	}
	pc.since = time.Now()
	p.idle[key] = append(p.idle[key], pc)
}

// Close ends every idle connection.
func (p *pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.idle {
		for _, pc := range l {
			pc.c.Quit(context.Background())
		}
		delete(p.idle, k)
	}
}

// deliver runs one transaction on a pooled connection to key, or on a new
// one from connect. A pooled connection that turns out to be dead is
// replaced once, by a new one; an error means the host could not be used
// at all.
func (p *pool) deliver(ctx context.Context, key, host string, connect func() (*client.Client, error), m *queue.Message, idx []int, body func() (io.ReadCloser, error)) ([]error, error) {
	for attempt := 0; attempt < 2; attempt++ {
		var pc *pooled
		if attempt == 0 {
			pc = p.get(key) // not on the retry: the others pooled may be dead too
		}
		fresh := pc == nil
		if fresh {
			c, err := connect()
			if err != nil {
				return nil, err
			}
			pc = &pooled{c: c, mta: host}
		}
		errs, err := send(ctx, pc.c, m, idx, body)
		var be bodyError
		if errors.As(err, &be) {
			// Our side failed before anything was sent: the connection is
			// as good as it was.
			p.put(key, pc)
			return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 3, 0}, "Cannot read the queued message", be.err)
		}
		if err != nil || closing(errs) {
			pc.c.Close()
			if !fresh {
				continue // a cached connection went stale: once more, anew
			}
			if err == nil {
				return errs, nil // the 421 is each recipient's answer
			}
			return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 4, 2}, "Connection to "+host+" failed", err)
		}
		p.put(key, pc)
		return errs, nil
	}
	return nil, smtp.NewError(451, smtp.EnhancedCode{4, 4, 2}, "Connection to "+host+" failed")
}

// bodyError is a failure to open the message body from the queue.
type bodyError struct{ err error }

func (e bodyError) Error() string { return "opening the message body: " + e.err.Error() }
func (e bodyError) Unwrap() error { return e.err }

// closing reports whether the server answered 421: it is closing the
// connection (RFC 5321 3.8), which must not be used again.
func closing(errs []error) bool {
	for _, e := range errs {
		var se *smtp.Error
		if errors.As(e, &se) && se.Code == 421 {
			return true
		}
	}
	return false
}

// greet reads the greeting on a new connection and says EHLO.
func greet(ctx context.Context, conn net.Conn, localName, host string) (*client.Client, error) {
	c, err := client.New(ctx, conn, client.Options{LocalName: localName})
	if err != nil {
		conn.Close()
		return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 4, 2}, "Bad greeting from "+host, err)
	}
	if err := c.Hello(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// rcptList builds the client recipients for the given indexes.
func rcptList(m *queue.Message, idx []int) []client.Recipient {
	out := make([]client.Recipient, len(idx))
	for k, i := range idx {
		r := m.Recipients[i]
		out[k] = client.Recipient{Address: r.Address, Options: r.Options}
	}
	return out
}

// send runs one transaction on an open client and converts the outcome.
// A connection failure is reported as err (the caller may try elsewhere).
func send(ctx context.Context, c *client.Client, m *queue.Message, idx []int, body func() (io.ReadCloser, error)) ([]error, error) {
	rc, err := body()
	if err != nil {
		return nil, bodyError{err}
	}
	defer rc.Close()
	res, err := c.Send(ctx, m.From, &m.MailOptions, rcptList(m, idx), rc, m.Size)
	if err != nil {
		return nil, err
	}
	return res.Rcpt, nil
}

func all(n int, err error, mta string) []delivery.Result {
	out := make([]delivery.Result, n)
	for i := range out {
		out[i] = delivery.Result{Err: err, RemoteMTA: mta}
	}
	return out
}

// MX delivers to each recipient domain's MX hosts (RFC 5321 5).
type MX struct {
	Resolver *mx.Resolver
	// Port is the port MX hosts are reached on; zero means 25.
	Port int
	// LocalName is our name in EHLO.
	LocalName string
	// Policy decides the TLS a host requires; nil means opportunistic
	// STARTTLS everywhere.
	Policy TLSPolicy
	// Dialer, if set, makes connections (tests, source addresses).
	Dialer *net.Dialer
	pool   pool
}

// TLSPolicy decides how a connection to an MX host must be secured.
type TLSPolicy interface {
	// ForHost returns the TLS requirement for delivery to host, an MX of
	// domain. An error defers delivery (a policy that cannot be learnt
	// must not turn into plaintext).
	ForHost(ctx context.Context, domain string, route *mx.Route, host string) (*Requirement, error)
}

// Requirement is what a TLS policy demands of one connection.
type Requirement struct {
	// Required refuses delivery without TLS.
	Required bool
	// Config verifies the server (nil: opportunistic, unverified).
	Config *tls.Config
	// Name describes the policy in errors and logs ("mta-sts", "dane").
	Name string
}

func (t *MX) port() int {
	if t.Port == 0 {
		return 25
	}
	return t.Port
}

// Close ends idle connections.
func (t *MX) Close() { t.pool.Close() }

// Deliver implements delivery.Transport.
func (t *MX) Deliver(ctx context.Context, m *queue.Message, domain string, idx []int, body func() (io.ReadCloser, error)) []delivery.Result {
	res := all(len(idx), nil, "")
	pendingIdx := make([]int, len(idx)) // positions in idx still to deliver
	for k := range pendingIdx {
		pendingIdx[k] = k
	}
	var hosts []mx.Host
	var route *mx.Route
	if ip, ok := (smtp.Address{Domain: domain}).IP(); ok {
		// An address literal names the host directly (RFC 5321 5.1).
		hosts = []mx.Host{{Name: ip.String(), Implicit: true}}
		route = &mx.Route{Hosts: hosts}
	} else {
		var err error
		route, err = t.Resolver.LookupMX(ctx, domain)
		if err != nil {
			return all(len(idx), err, "")
		}
		hosts = route.Hosts
	}
	var lastErr error = smtp.NewError(451, smtp.EnhancedCode{4, 4, 1}, "No answer from any MX host of "+domain)
	for _, h := range hosts {
		if len(pendingIdx) == 0 {
			break
		}
		addrs, _, err := t.Resolver.LookupAddrs(ctx, h.Name)
		if err != nil {
			if h.Implicit && errors.Is(err, mx.ErrNoAddress) {
				// No MX and no address: the domain takes no mail.
				return all(len(idx), smtp.Wrap(550, smtp.EnhancedCode{5, 1, 2}, "No mail host for "+domain, err), "")
			}
			lastErr = smtp.Wrap(451, smtp.EnhancedCode{4, 4, 3}, "Cannot resolve MX host "+h.Name, err)
			continue
		}
		req := &Requirement{}
		if t.Policy != nil {
			req, err = t.Policy.ForHost(ctx, domain, route, h.Name)
			if err != nil {
				lastErr = smtp.ErrorOf(err)
				continue
			}
		}
		for _, a := range addrs {
			if len(pendingIdx) == 0 {
				break
			}
			sub := make([]int, len(pendingIdx))
			for k, p := range pendingIdx {
				sub[k] = idx[p]
			}
			errs, err := t.tryHost(ctx, h.Name, a, req, m, sub, body)
			if err != nil {
				lastErr = err
				continue
			}
			// RFC 5321 5.1: a 4xx from one MX means try the next; a 5xx
			// or 2xx is final for that recipient.
			var still []int
			for k, p := range pendingIdx {
				e := errs[k]
				var se *smtp.Error
				if e != nil && (!errors.As(e, &se) || se.Temporary()) {
					lastErr = e
					still = append(still, p)
					res[p] = delivery.Result{Err: e, RemoteMTA: h.Name}
					continue
				}
				res[p] = delivery.Result{Err: e, RemoteMTA: h.Name}
			}
			pendingIdx = still
		}
	}
	for _, p := range pendingIdx {
		if res[p].Err == nil {
			res[p].Err = lastErr
		}
	}
	return res
}

// tryHost delivers on a pooled or new connection to one address. An error
// means the host could not be used at all.
func (t *MX) tryHost(ctx context.Context, host string, addr netip.Addr, req *Requirement, m *queue.Message, idx []int, body func() (io.ReadCloser, error)) ([]error, error) {
	target := net.JoinHostPort(addr.String(), strconv.Itoa(t.port()))
	connect := func() (*client.Client, error) { return t.connect(ctx, host, target, req) }
	return t.pool.deliver(ctx, target+"|"+host+"|"+req.Name, host, connect, m, idx, body)
}

func (t *MX) connect(ctx context.Context, host, target string, req *Requirement) (*client.Client, error) {
	d := t.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: dialTimeout}
	}
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 4, 1}, "Cannot connect to "+host, err)
	}
	c, err := greet(ctx, conn, t.LocalName, host)
	if err != nil {
		return nil, err
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		cfg := req.Config
		if cfg == nil {
			// Opportunistic: encrypt, but do not insist on a valid
			// certificate, which most MX hosts lack (RFC 7435).
			cfg = &tls.Config{ServerName: host, InsecureSkipVerify: true}
		}
		if err := c.StartTLS(ctx, cfg); err != nil {
			c.Close()
			return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 7, 5}, "TLS with "+host+" failed", err)
		}
	} else if req.Required {
		c.Close()
		return nil, smtp.NewError(451, smtp.EnhancedCode{4, 7, 5}, host+" does not offer STARTTLS, which the "+req.Name+" policy requires")
	}
	return c, nil
}

// Smarthost sends everything through one upstream server with AUTH.
type Smarthost struct {
	// Addr is "host:port".
	Addr string
	// ImplicitTLS connects with TLS from the start (smtps); otherwise
	// STARTTLS is required.
	ImplicitTLS bool
	// Username and Password, if set, authenticate with PLAIN.
	Username, Password string
	// TLSConfig verifies the upstream; nil means the system roots and the
	// host name from Addr.
	TLSConfig *tls.Config
	LocalName string
	pool      pool
}

// Close ends idle connections.
func (t *Smarthost) Close() { t.pool.Close() }

// Deliver implements delivery.Transport.
func (t *Smarthost) Deliver(ctx context.Context, m *queue.Message, domain string, idx []int, body func() (io.ReadCloser, error)) []delivery.Result {
	host, _, _ := net.SplitHostPort(t.Addr)
	connect := func() (*client.Client, error) { return t.connect(ctx, host) }
	errs, err := t.pool.deliver(ctx, t.Addr, host, connect, m, idx, body)
	if err != nil {
		return all(len(idx), err, host)
	}
	out := make([]delivery.Result, len(idx))
	for k := range out {
		out[k] = delivery.Result{Err: errs[k], RemoteMTA: host}
	}
	return out
}

func (t *Smarthost) connect(ctx context.Context, host string) (*client.Client, error) {
	cfg := t.TLSConfig
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg = cfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	d := &net.Dialer{Timeout: dialTimeout}
	var conn net.Conn
	var err error
	if t.ImplicitTLS {
		conn, err = (&tls.Dialer{NetDialer: d, Config: cfg}).DialContext(ctx, "tcp", t.Addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", t.Addr)
	}
	if err != nil {
		var cv *tls.CertificateVerificationError
		if errors.As(err, &cv) {
			return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 7, 5}, "TLS with smarthost "+host+" failed", err)
		}
		return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 4, 1}, "Cannot connect to smarthost "+host, err)
	}
	c, err := greet(ctx, conn, t.LocalName, "smarthost "+host)
	if err != nil {
		return nil, err
	}
	if !t.ImplicitTLS {
		if ok, _ := c.Extension("STARTTLS"); !ok {
			c.Close()
			return nil, smtp.NewError(451, smtp.EnhancedCode{4, 7, 5}, "Smarthost "+host+" does not offer STARTTLS")
		}
		if err := c.StartTLS(ctx, cfg); err != nil {
			c.Close()
			return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 7, 5}, "TLS with smarthost "+host+" failed", err)
		}
	}
	if t.Username != "" {
		if err := c.Auth(ctx, sasl.NewPlainClient("", t.Username, t.Password)); err != nil {
			c.Close()
			// Whatever the smarthost says to our AUTH (wrong credentials,
			// no AUTH offered, a mechanism refused) is our configuration's
			// fault, not the message's: keep it queued until someone fixes
			// it, rather than bounce everything.
			var se *smtp.Error
			if errors.As(err, &se) && se.Code == 535 {
				return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 7, 8}, "Smarthost "+host+" refused our credentials", err)
			}
			return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 3, 5}, "AUTH with smarthost "+host+" failed", err)
		}
	}
	return c, nil
}

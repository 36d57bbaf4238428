// Package mx finds where mail for a domain goes (RFC 5321 5.1): its MX
// hosts in preference order, shuffled among equals, the implicit MX when
// there is none, and the null MX (RFC 7505) that refuses all mail. It
// queries a configurable DNS server directly, so that tests and users
// with a local resolver go through the real DNS path, and so that DANE
// can see whether answers were DNSSEC-validated.
package mx

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/smtpkit/smtpkit/smtp"
)

// Resolver queries one DNS server (a validating resolver, for DANE).
type Resolver struct {
	// Server is "host:port"; "" means the first nameserver in
	// /etc/resolv.conf, port 53.
	Server string
	// Timeout bounds each query; zero means 5 seconds.
	Timeout time.Duration
	// NoCache turns off the answer cache. By default answers are kept for
	// their TTL (at most 5 minutes; a name that does not exist for one
	// minute), since a relay asks the same questions for every message
	// to a domain.
	NoCache bool

	mu    sync.Mutex
	cache map[cacheKey]cached
}

type cacheKey struct {
	name  string
	qtype uint16
}

type cached struct {
	msg     *dns.Msg
	err     error
	expires time.Time
}

const (
	maxCacheTTL      = 5 * time.Minute
	negativeCacheTTL = time.Minute
	maxCacheEntries  = 10000
)

// lookup answers from the cache or asks the server, and keeps what may be
// kept: answers and NXDOMAIN, never transient failures.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	if r.NoCache {
		return r.query(ctx, name, qtype)
	}
	key := cacheKey{strings.ToLower(dns.Fqdn(name)), qtype}
	now := time.Now()
	r.mu.Lock()
	if c, ok := r.cache[key]; ok && now.Before(c.expires) {
		r.mu.Unlock()
		return c.msg, c.err
	}
	r.mu.Unlock()
	in, err := r.query(ctx, name, qtype)
	var ttl time.Duration
	switch {
	case err == nil:
		ttl = maxCacheTTL
		for _, rr := range in.Answer {
			ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
		}
	case errors.Is(err, ErrNoSuchDomain):
		ttl = negativeCacheTTL
	}
	if ttl > 0 {
		r.mu.Lock()
		if r.cache == nil || len(r.cache) >= maxCacheEntries {
			r.cache = map[cacheKey]cached{} // crude, but bounded
		}
		r.cache[key] = cached{msg: in, err: err, expires: now.Add(ttl)}
		r.mu.Unlock()
	}
	return in, err
}

// Errors for lookups. A permanent failure is one the DNS itself states
// (the name does not exist); anything else may pass, so it is temporary.
var (
	ErrNoSuchDomain = errors.New("mx: no such domain")
	ErrNoAddress    = errors.New("mx: host has no address")
)

func (r *Resolver) server() (string, error) {
	if r.Server != "" {
		return r.Server, nil
	}
	cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil || len(cfg.Servers) == 0 {
		return "", fmt.Errorf("mx: no DNS server configured: %v", err)
	}
	return net.JoinHostPort(cfg.Servers[0], cfg.Port), nil
}

// query sends one question, with the DO bit so that a validating resolver
// reports validation in the AD bit, retrying over TCP if truncated.
func (r *Resolver) query(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	srv, err := r.server()
	if err != nil {
		return nil, err
	}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(4096, true)
	m.AuthenticatedData = true
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	c := &dns.Client{Timeout: timeout}
	in, _, err := c.ExchangeContext(ctx, m, srv)
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, srv)
	}
	if err != nil {
		return nil, err
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
		return in, nil
	case dns.RcodeNameError:
		return in, ErrNoSuchDomain
	default:
		return nil, fmt.Errorf("mx: %s %s: %s", name, dns.TypeToString[qtype], dns.RcodeToString[in.Rcode])
	}
}

// Host is one MX host.
type Host struct {
	Name       string
	Preference uint16
	// Implicit marks the domain itself used as its own MX.
	Implicit bool
}

// Route is where a domain's mail goes.
type Route struct {
	Hosts []Host
	// Secure is set when the MX answer was DNSSEC-validated, which DANE
	// requires before it trusts TLSA records for the hosts.
	Secure bool
}

// LookupMX returns the domain's MX hosts in the order to try them
// (RFC 5321 5.1). A null MX is a permanent *smtp.Error (556 5.1.10), as is
// a domain that does not exist (550 5.1.2); DNS trouble is temporary.
func (r *Resolver) LookupMX(ctx context.Context, domain string) (*Route, error) {
	in, err := r.lookup(ctx, domain, dns.TypeMX)
	if errors.Is(err, ErrNoSuchDomain) {
		return nil, smtp.Wrap(550, smtp.EnhancedCode{5, 1, 2}, "Recipient domain "+domain+" does not exist", err)
	}
	if err != nil {
		return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 4, 3}, "DNS lookup for "+domain+" failed", err)
	}
	route := &Route{Secure: in.AuthenticatedData}
	for _, rr := range in.Answer {
		if mx, ok := rr.(*dns.MX); ok {
			route.Hosts = append(route.Hosts, Host{Name: strings.TrimSuffix(mx.Mx, "."), Preference: mx.Preference})
		}
	}
	// RFC 7505 3: a single MX with an empty target means no mail.
	for _, h := range route.Hosts {
		if h.Name == "" {
			if len(route.Hosts) == 1 {
				return nil, smtp.NewError(556, smtp.EnhancedCode{5, 1, 10}, "Recipient domain "+domain+" does not accept mail (null MX)")
			}
		}
	}
	if len(route.Hosts) == 0 {
		// RFC 5321 5.1: no MX, so the domain itself, if it has an address.
		route.Hosts = []Host{{Name: domain, Implicit: true}}
		return route, nil
	}
	hosts := route.Hosts[:0]
	for _, h := range route.Hosts {
		if h.Name != "" {
			hosts = append(hosts, h)
		}
	}
	rand.Shuffle(len(hosts), func(i, j int) { hosts[i], hosts[j] = hosts[j], hosts[i] })
	sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Preference < hosts[j].Preference })
	route.Hosts = hosts
	return route, nil
}

// LookupAddrs returns a host's IPv6 and IPv4 addresses, IPv6 first
// (RFC 6724 preference), and whether both answers were validated.
func (r *Resolver) LookupAddrs(ctx context.Context, host string) ([]netip.Addr, bool, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, false, nil
	}
	var out []netip.Addr
	secure := true
	var firstErr error
	for _, qt := range []uint16{dns.TypeAAAA, dns.TypeA} {
		in, err := r.lookup(ctx, host, qt)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			secure = false
			continue
		}
		secure = secure && in.AuthenticatedData
		for _, rr := range in.Answer {
			switch a := rr.(type) {
			case *dns.AAAA:
				if ip, ok := netip.AddrFromSlice(a.AAAA); ok {
					out = append(out, ip)
				}
			case *dns.A:
				if ip, ok := netip.AddrFromSlice(a.A.To4()); ok {
					out = append(out, ip)
				}
			}
		}
	}
	if len(out) == 0 {
		if firstErr != nil && !errors.Is(firstErr, ErrNoSuchDomain) {
			return nil, false, firstErr
		}
		return nil, false, ErrNoAddress
	}
	return out, secure, nil
}

// TLSA is one TLSA record (RFC 6698) for DANE.
type TLSA struct {
	Usage, Selector, MatchingType uint8
	Data                          string // hex
}

// LookupTLSA returns the TLSA records at _port._tcp.host, and whether the
// answer was DNSSEC-validated; records from an unvalidated answer must
// not be used (RFC 7672 2.2).
func (r *Resolver) LookupTLSA(ctx context.Context, host string, port int) ([]TLSA, bool, error) {
	in, err := r.lookup(ctx, fmt.Sprintf("_%d._tcp.%s", port, host), dns.TypeTLSA)
	if errors.Is(err, ErrNoSuchDomain) {
		return nil, in != nil && in.AuthenticatedData, nil
	}
	if err != nil {
		return nil, false, err
	}
	var out []TLSA
	for _, rr := range in.Answer {
		if t, ok := rr.(*dns.TLSA); ok {
			out = append(out, TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: t.Certificate})
		}
	}
	return out, in.AuthenticatedData, nil
}

// LookupTXT returns the TXT strings at name, each record's strings joined.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	in, err := r.lookup(ctx, name, dns.TypeTXT)
	if errors.Is(err, ErrNoSuchDomain) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range in.Answer {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}

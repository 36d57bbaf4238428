// Package tlspolicy decides how delivery to an MX host must be secured:
// DANE (RFC 7672) where the MX and its TLSA records are DNSSEC-validated,
// else MTA-STS (RFC 8461) where the domain publishes an enforced policy,
// else opportunistic STARTTLS. A policy that cannot be met defers
// delivery; it never falls back to plaintext.
package tlspolicy

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/smtpkit/smtpkit/delivery/mx"
	"github.com/smtpkit/smtpkit/delivery/remote"
	"github.com/smtpkit/smtpkit/smtp"
)

// Policy implements remote.TLSPolicy.
type Policy struct {
	Resolver *mx.Resolver
	// Port is the SMTP port, for the TLSA name _port._tcp.host; zero means 25.
	Port int
	// HTTPClient fetches MTA-STS policies; nil means one with a 10 second
	// timeout that follows no redirects (RFC 8461 3.3).
	HTTPClient *http.Client
	// RootCAs verifies MX certificates under MTA-STS; nil means the
	// system's roots.
	RootCAs *x509.CertPool
	// DisableMTASTS and DisableDANE turn each mechanism off.
	DisableMTASTS, DisableDANE bool
	// Now, if set, is the clock (tests).
	Now func() time.Time

	mu    sync.Mutex
	cache map[string]*stsEntry
}

type stsEntry struct {
	policy  *STS // nil: the domain has none
	id      string
	expires time.Time
}

// STS is a parsed MTA-STS policy.
type STS struct {
	Mode   string // enforce, testing, none
	MX     []string
	MaxAge time.Duration
}

func (p *Policy) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// ForHost implements remote.TLSPolicy.
func (p *Policy) ForHost(ctx context.Context, domain string, route *mx.Route, host string) (*remote.Requirement, error) {
	if !p.DisableDANE && route != nil && route.Secure {
		port := p.Port
		if port == 0 {
			port = 25
		}
		recs, secure, err := p.Resolver.LookupTLSA(ctx, host, port)
		if err != nil {
			// RFC 7672 2.2: a failed TLSA lookup for a secure MX defers.
			return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 7, 5}, "DANE: TLSA lookup for "+host+" failed", err)
		}
		if secure && len(recs) > 0 {
			return daneRequirement(host, recs), nil
		}
	}
	if p.DisableMTASTS {
		return &remote.Requirement{}, nil
	}
	sts, err := p.sts(ctx, domain)
	if err != nil {
		return nil, err
	}
	if sts == nil || sts.Mode != "enforce" {
		return &remote.Requirement{}, nil
	}
	if !matchMX(sts.MX, host) {
		return nil, smtp.NewError(451, smtp.EnhancedCode{4, 7, 5}, "MTA-STS: "+host+" is not an MX host the policy of "+domain+" allows")
	}
	cfg := &tls.Config{ServerName: host, RootCAs: p.RootCAs, MinVersion: tls.VersionTLS12}
	return &remote.Requirement{Required: true, Config: cfg, Name: "mta-sts"}, nil
}

// sts returns the domain's MTA-STS policy (nil if none), from the cache
// while its max_age lasts and its TXT id is unchanged.
func (p *Policy) sts(ctx context.Context, domain string) (*STS, error) {
	domain = strings.ToLower(domain)
	txts, txtErr := p.Resolver.LookupTXT(ctx, "_mta-sts."+domain)
	id := ""
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1") {
			for _, f := range strings.Split(t, ";") {
				if k, v, ok := strings.Cut(strings.TrimSpace(f), "="); ok && k == "id" {
					id = v
				}
			}
		}
	}
	p.mu.Lock()
	if p.cache == nil {
		p.cache = map[string]*stsEntry{}
	}
	cached := p.cache[domain]
	p.mu.Unlock()
	now := p.now()
	if cached != nil && now.Before(cached.expires) && (id == "" || id == cached.id) {
		// RFC 8461 5.1: a cached policy stands even when the TXT record
		// disappears, until it expires: that is what defeats stripping.
		return cached.policy, nil
	}
	if id == "" {
		if txtErr != nil {
			return nil, smtp.Wrap(451, smtp.EnhancedCode{4, 4, 3}, "MTA-STS: lookup for "+domain+" failed", txtErr)
		}
		return nil, nil
	}
	sts, err := p.fetch(ctx, domain)
	if err != nil {
		if cached != nil && cached.policy != nil {
			return cached.policy, nil
		}
		// RFC 8461 3.3: with no usable policy, deliver as if there were
		// none (the TXT record alone proves nothing).
		return nil, nil
	}
	p.mu.Lock()
	p.cache[domain] = &stsEntry{policy: sts, id: id, expires: now.Add(sts.MaxAge)}
	p.mu.Unlock()
	return sts, nil
}

func (p *Policy) httpClient() *http.Client {
	if p.HTTPClient != nil {
		return p.HTTPClient
	}
	return &http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (p *Policy) fetch(ctx context.Context, domain string) (*STS, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "https://mta-sts."+domain+"/.well-known/mta-sts.txt", nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.httpClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("mta-sts: HTTP %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return nil, fmt.Errorf("mta-sts: content type %q", ct)
	}
	return ParseSTS(io.LimitReader(resp.Body, 64<<10))
}

// ParseSTS parses a policy file (RFC 8461 3.2).
func ParseSTS(r io.Reader) (*STS, error) {
	sts := &STS{}
	sc := bufio.NewScanner(r)
	version := ""
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimRight(sc.Text(), "\r"), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "version":
			version = v
		case "mode":
			sts.Mode = v
		case "mx":
			sts.MX = append(sts.MX, strings.ToLower(v))
		case "max_age":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > 31557600 {
				return nil, errors.New("mta-sts: bad max_age")
			}
			sts.MaxAge = time.Duration(n) * time.Second
		}
	}
	if version != "STSv1" {
		return nil, errors.New("mta-sts: not an STSv1 policy")
	}
	switch sts.Mode {
	case "enforce", "testing":
		if len(sts.MX) == 0 {
			return nil, errors.New("mta-sts: no mx patterns")
		}
	case "none":
	default:
		return nil, errors.New("mta-sts: bad mode")
	}
	return sts, sc.Err()
}

// matchMX matches a host against the policy's patterns; "*.example.com"
// matches exactly one leftmost label (RFC 8461 4.1).
func matchMX(patterns []string, host string) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, p := range patterns {
		if p == host {
			return true
		}
		if rest, ok := strings.CutPrefix(p, "*."); ok {
			if _, after, ok := strings.Cut(host, "."); ok && after == rest {
				return true
			}
		}
	}
	return false
}

// daneRequirement builds the TLS check for a host's TLSA records. Only
// DANE-TA(2) and DANE-EE(3) apply to SMTP (RFC 7672 3.1); if none of the
// records is usable, TLS is still required but not authenticated.
func daneRequirement(host string, recs []mx.TLSA) *remote.Requirement {
	var usable []mx.TLSA
	for _, r := range recs {
		if (r.Usage == 2 || r.Usage == 3) && r.Selector <= 1 && r.MatchingType <= 2 {
			usable = append(usable, r)
		}
	}
	cfg := &tls.Config{ServerName: host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if len(usable) > 0 {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error { return verifyDANE(host, usable, cs.PeerCertificates) }
	}
	return &remote.Requirement{Required: true, Config: cfg, Name: "dane"}
}

func verifyDANE(host string, recs []mx.TLSA, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return errors.New("dane: no certificate")
	}
	leaf := chain[0]
	for _, r := range recs {
		switch r.Usage {
		case 3:
			// DANE-EE: the leaf itself is named; its names and dates do
			// not matter (RFC 7672 3.1.1).
			if tlsaMatch(r, leaf) {
				return nil
			}
		case 2:
			// DANE-TA: some certificate of the chain is the trust anchor,
			// and the leaf must chain to it and carry the host's name.
			for _, ca := range chain[1:] {
				if !tlsaMatch(r, ca) {
					continue
				}
				roots := x509.NewCertPool()
				roots.AddCert(ca)
				inter := x509.NewCertPool()
				for _, c := range chain[1:] {
					inter.AddCert(c)
				}
				if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter}); err == nil {
					return nil
				}
			}
		}
	}
	return errors.New("dane: no TLSA record matches the certificate of " + host)
}

func tlsaMatch(r mx.TLSA, c *x509.Certificate) bool {
	data := c.Raw
	if r.Selector == 1 {
		data = c.RawSubjectPublicKeyInfo
	}
	var sum []byte
	switch r.MatchingType {
	case 0:
		sum = data
	case 1:
		h := sha256.Sum256(data)
		sum = h[:]
	case 2:
		h := sha512.Sum512(data)
		sum = h[:]
	}
	want, err := hex.DecodeString(r.Data)
	return err == nil && len(want) > 0 && string(want) == string(sum)
}

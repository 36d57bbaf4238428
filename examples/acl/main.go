// ACL refuses clients by address before the greeting, and checks the
// HELO/EHLO name. It shows the connection hook (Handler.NewSession): a
// client outside the allowed networks is greeted "554" (RFC 5321 3.1) and
// may only QUIT; each accepted connection is logged with its address and
// how many times that address has connected. It also shows the optional
// HelloSession: a name that is neither a dotted domain nor an address
// literal gets 504 5.5.2, as Postfix's reject_non_fqdn_helo_hostname does.
//
// Accepted mail is printed, not delivered (see examples/savefiles).
//
// Try it:
//
//	go run ./examples/acl -listen 127.0.0.1:2525 -allow 127.0.0.0/8,::1/128
//	swaks --server 127.0.0.1:2525 --helo client.example --from a@example.org --to b@example.com
//	go run ./examples/acl -allow 192.0.2.0/24   # then swaks again: 554
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2525", "address to accept mail on")
	allow := flag.String("allow", "127.0.0.0/8,::1/128", "comma-separated networks allowed to connect")
	flag.Parse()
	nets, err := parsePrefixes(*allow)
	if err != nil {
		log.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	srv := &server.Server{
		Addr:    *listen,
		Logger:  logger,
		Handler: newACL(nets, logger, printer(os.Stdout)),
	}
	log.Fatal(srv.ListenAndServe())
}

// parsePrefixes parses "10.0.0.0/8,2001:db8::/32"; a bare address is a
// single host.
func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !strings.Contains(f, "/") {
			a, err := netip.ParseAddr(f)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// acl is a Handler that admits clients from allowed networks and passes
// their sessions on to next.
type acl struct {
	allow  []netip.Prefix
	log    *slog.Logger
	next   server.Handler
	mu     sync.Mutex
	counts map[netip.Addr]int
}

func newACL(allow []netip.Prefix, log *slog.Logger, next server.Handler) *acl {
	return &acl{allow: allow, log: log, next: next, counts: map[netip.Addr]int{}}
}

func (a *acl) allowed(ip netip.Addr) bool {
	for _, p := range a.allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// NewSession runs before the greeting.
func (a *acl) NewSession(ctx context.Context, c *server.Conn) (server.Session, error) {
	ip := c.RemoteIP()
	if !a.allowed(ip) {
		a.log.Info("refused", "id", c.ID, "ip", ip)
		// A 5xx here is sent as the greeting, "554 5.7.1 <host> Access
		// denied"; the client may then only QUIT.
		return nil, smtp.NewError(554, smtp.EnhancedCode{5, 7, 1}, "Access denied")
	}
	a.mu.Lock()
	a.counts[ip]++
	n := a.counts[ip]
	a.mu.Unlock()
	a.log.Info("accepted", "id", c.ID, "ip", ip, "connections", n)

	s, err := a.next.NewSession(ctx, c)
	if err != nil {
		return nil, err
	}
	return &helloCheck{Session: s}, nil
}

// helloCheck adds a HELO check to a session. Embedding server.Session
// keeps only its required methods: a wrapper must forward the optional
// ones it wants to keep, as Hello does below.
type helloCheck struct {
	server.Session
}

func (h *helloCheck) Hello(ctx context.Context, name string) error {
	// RFC 5321 4.1.1.1: the name is a domain or an address literal.
	if !strings.HasPrefix(name, "[") && !strings.Contains(strings.Trim(name, "."), ".") {
		return smtp.NewError(504, smtp.EnhancedCode{5, 5, 2}, "Helo command rejected: need fully-qualified hostname")
	}
	if hs, ok := h.Session.(server.HelloSession); ok {
		return hs.Hello(ctx, name)
	}
	return nil
}

// printer is the stand-in for delivery: it prints each envelope's summary.
func printer(w io.Writer) server.EnvelopeFunc {
	return func(ctx context.Context, e *server.Envelope) error {
		n, err := io.Copy(io.Discard, e.Data)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "message from=%s to=%v client=%s helo=%s bytes=%d\n",
			e.From.Path(), e.Addresses(), e.Conn.RemoteIP(), e.Conn.Hello(), n)
		return nil
	}
}

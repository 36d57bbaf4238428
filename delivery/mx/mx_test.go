package mx

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"github.com/smtpkit/smtpkit/internal/dnstest"
	"github.com/smtpkit/smtpkit/smtp"
)

func TestLookupMX(t *testing.T) {
	srv := dnstest.New(t,
		"multi.test. MX 20 c.multi.test.",
		"multi.test. MX 10 a.multi.test.",
		"multi.test. MX 10 b.multi.test.",
		"implicit.test. A 127.0.0.5",
		"null.test. MX 0 .",
		"a.multi.test. A 127.0.0.2",
		"a.multi.test. AAAA ::1",
		"_25._tcp.a.multi.test. TLSA 3 1 1 aabbcc",
		"txt.test. TXT \"v=STSv1; id=1\"",
	)
	r := &Resolver{Server: srv.Addr, NoCache: true}
	ctx := context.Background()

	seenFirst := map[string]bool{}
	for i := 0; i < 50; i++ {
		route, err := r.LookupMX(ctx, "multi.test")
		if err != nil {
			t.Fatal(err)
		}
		if len(route.Hosts) != 3 || route.Hosts[2].Name != "c.multi.test" || route.Hosts[0].Preference != 10 {
			t.Fatalf("hosts %+v", route.Hosts)
		}
		seenFirst[route.Hosts[0].Name] = true
	}
	if !seenFirst["a.multi.test"] || !seenFirst["b.multi.test"] {
		t.Errorf("equal preferences not shuffled: first was only %v", seenFirst)
	}

	route, err := r.LookupMX(ctx, "implicit.test")
	if err != nil || len(route.Hosts) != 1 || !route.Hosts[0].Implicit || route.Hosts[0].Name != "implicit.test" {
		t.Fatalf("implicit MX: %+v %v", route, err)
	}

	var se *smtp.Error
	if _, err := r.LookupMX(ctx, "null.test"); !errors.As(err, &se) || se.Code != 556 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 10}) {
		t.Fatalf("null MX: %v", err)
	}
	if _, err := r.LookupMX(ctx, "nonexistent.test"); !errors.As(err, &se) || se.Code != 550 {
		t.Fatalf("NXDOMAIN: %v", err)
	}
	srv.Fail("broken.test", dns.RcodeServerFailure)
	if _, err := r.LookupMX(ctx, "broken.test"); !errors.As(err, &se) || !se.Temporary() {
		t.Fatalf("SERVFAIL must be temporary: %v", err)
	}

	addrs, _, err := r.LookupAddrs(ctx, "a.multi.test")
	if err != nil || len(addrs) != 2 || addrs[0] != netip.MustParseAddr("::1") || addrs[1] != netip.MustParseAddr("127.0.0.2") {
		t.Fatalf("addrs %v %v", addrs, err)
	}
	if _, _, err := r.LookupAddrs(ctx, "c.multi.test"); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("host without address: %v", err)
	}

	tlsa, secure, err := r.LookupTLSA(ctx, "a.multi.test", 25)
	if err != nil || len(tlsa) != 1 || tlsa[0].Usage != 3 || tlsa[0].Data != "aabbcc" || secure {
		t.Fatalf("tlsa %+v %v %v", tlsa, secure, err)
	}
	srv.SetSecure(true)
	if route, _ := r.LookupMX(ctx, "multi.test"); !route.Secure {
		t.Error("AD bit not reported")
	}
	txt, err := r.LookupTXT(ctx, "txt.test")
	if err != nil || len(txt) != 1 || txt[0] != "v=STSv1; id=1" {
		t.Fatalf("txt %v %v", txt, err)
	}
}

func TestCache(t *testing.T) {
	srv := dnstest.New(t, "c.test. 300 IN MX 10 mx.c.test.")
	r := &Resolver{Server: srv.Addr}
	ctx := context.Background()
	if _, err := r.LookupMX(ctx, "c.test"); err != nil {
		t.Fatal(err)
	}
	// The server changes its mind; the cached answer stands for its TTL.
	srv.Set(t, "c.test. 300 IN MX 10 other.c.test.")
	route, err := r.LookupMX(ctx, "c.test")
	if err != nil || route.Hosts[0].Name != "mx.c.test" {
		t.Fatalf("cached answer: %+v %v", route, err)
	}
	// A transient failure is not cached.
	srv.Fail("f.test", dns.RcodeServerFailure)
	r.LookupMX(ctx, "f.test")
	srv.Set(t, "f.test. 300 IN MX 10 mx.f.test.")
	srv.Fail("f.test", dns.RcodeSuccess)
	if route, err := r.LookupMX(ctx, "f.test"); err != nil || route.Hosts[0].Name != "mx.f.test" {
		t.Fatalf("after SERVFAIL: %+v %v", route, err)
	}
}

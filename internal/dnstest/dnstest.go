// Package dnstest runs a small DNS server on loopback for tests: records
// are given in zone-file syntax, answered over UDP and TCP, so code under
// test goes through its real resolver path.
package dnstest

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Server answers from a fixed set of records.
type Server struct {
	Addr string // "127.0.0.1:port", UDP and TCP
	mu   sync.Mutex
	rrs  []dns.RR
	// Secure sets the AD bit on every answer, as a validating resolver
	// does for a signed zone.
	secure  bool
	failing map[string]int // name → rcode to answer with
	udp     *dns.Server
	tcp     *dns.Server
}

// New starts a server with records such as "example.org. MX 10 mx.example.org."
// and stops it when the test ends.
func New(t testing.TB, records ...string) *Server {
	t.Helper()
	s := &Server{failing: map[string]int{}}
	s.Set(t, records...)
	// UDP and TCP on the same port: a UDP port the kernel picked may be
	// taken for TCP, so try a few.
	var pc net.PacketConn
	var l net.Listener
	for attempt := 0; ; attempt++ {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if attempt == 20 {
			t.Fatal(err)
		}
	}
	s.Addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: l, Handler: h}
	var started sync.WaitGroup
	started.Add(2)
	s.udp.NotifyStartedFunc = started.Done
	s.tcp.NotifyStartedFunc = started.Done
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	started.Wait()
	t.Cleanup(func() { s.udp.Shutdown(); s.tcp.Shutdown() })
	return s
}

// Set replaces the records.
func (s *Server) Set(t testing.TB, records ...string) {
	t.Helper()
	var rrs []dns.RR
	for _, r := range records {
		rr, err := dns.NewRR(r)
		if err != nil {
			t.Fatalf("dnstest: %q: %v", r, err)
		}
		rrs = append(rrs, rr)
	}
	s.mu.Lock()
	s.rrs = rrs
	s.mu.Unlock()
}

// SetSecure makes answers carry the AD (authenticated data) bit.
func (s *Server) SetSecure(v bool) { s.mu.Lock(); s.secure = v; s.mu.Unlock() }

// Fail makes queries for name answer with rcode (e.g. dns.RcodeServerFailure);
// dns.RcodeSuccess makes them answer normally again.
func (s *Server) Fail(name string, rcode int) {
	s.mu.Lock()
	s.failing[dns.Fqdn(strings.ToLower(name))] = rcode
	s.mu.Unlock()
}

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	s.mu.Lock()
	defer s.mu.Unlock()
	m.AuthenticatedData = s.secure
	if len(req.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if rc, ok := s.failing[name]; ok && rc != dns.RcodeSuccess {
		m.Rcode = rc
		w.WriteMsg(m)
		return
	}
	exists := false
	for _, rr := range s.rrs {
		h := rr.Header()
		if strings.ToLower(h.Name) != name {
			continue
		}
		exists = true
		if h.Rrtype == q.Qtype {
			m.Answer = append(m.Answer, dns.Copy(rr))
		}
	}
	if !exists {
		m.Rcode = dns.RcodeNameError
	}
	w.WriteMsg(m)
}

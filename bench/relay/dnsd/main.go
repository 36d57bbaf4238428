// Command dnsd is a tiny authoritative DNS responder for the relay
// benchmark (bench/relay/run.sh): every domain given with -domain has one
// MX, "mx.<domain>", whose A record is -a (127.0.0.1), or the address given
// as "domain=address" in the list; AAAA, TXT (so no
// MTA-STS) and TLSA get an empty NOERROR answer, names outside those domains
// NXDOMAIN. It listens on UDP and TCP on -listen, counts the queries it
// answers, and prints the count on stdout when it gets SIGTERM or SIGINT
// (and on SIGUSR1, without stopping), so the benchmark can report how many
// lookups a relayed message costs.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/miekg/dns"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5353", "UDP and TCP `address`")
	domains := flag.String("domain", "dst.test", "comma-separated `domains` that get an MX (domain or domain=ipv4)")
	addr := flag.String("a", "127.0.0.1", "IPv4 `address` of every MX host")
	flag.Parse()
	ip := net.ParseIP(*addr).To4()
	if ip == nil {
		log.Fatalf("dnsd: -a %q is not an IPv4 address", *addr)
	}
	zones := map[string]net.IP{} // zone → its MX host's address
	for _, d := range strings.Split(*domains, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		zip := ip
		if name, a, ok := strings.Cut(d, "="); ok {
			if zip = net.ParseIP(a).To4(); zip == nil {
				log.Fatalf("dnsd: -domain %q: not an IPv4 address", d)
			}
			d = name
		}
		zones[dns.Fqdn(strings.ToLower(d))] = zip
	}
	var byType [65536]atomic.Int64
	var total atomic.Int64
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		if len(r.Question) != 1 {
			m.Rcode = dns.RcodeFormatError
			w.WriteMsg(m)
			return
		}
		total.Add(1)
		q := r.Question[0]
		byType[q.Qtype].Add(1)
		name := strings.ToLower(q.Name)
		zone := ""
		var zip net.IP
		for z, a := range zones {
			if name == z || strings.HasSuffix(name, "."+z) {
				zone, zip = z, a
				break
			}
		}
		hdr := func(t uint16) dns.RR_Header {
			return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 300}
		}
		switch {
		case zone == "":
			m.Rcode = dns.RcodeNameError
		case q.Qtype == dns.TypeMX && name == zone:
			m.Answer = append(m.Answer, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: 10, Mx: "mx." + zone})
		case q.Qtype == dns.TypeA && name == "mx."+zone:
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: zip})
		case name == zone || name == "mx."+zone || name == "_mta-sts."+zone:
			// the name exists; no records of this type (NODATA)
		default:
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		log.Fatal("dnsd: ", err)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal("dnsd: ", err)
	}
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: l, Handler: h}
	go func() { log.Fatal(udp.ActivateAndServe()) }()
	go func() { log.Fatal(tcp.ActivateAndServe()) }()
	report := func() {
		var parts []string
		for _, t := range []uint16{dns.TypeMX, dns.TypeA, dns.TypeAAAA, dns.TypeTXT, dns.TypeTLSA} {
			parts = append(parts, fmt.Sprintf("%s=%d", dns.TypeToString[t], byType[t].Load()))
		}
		fmt.Printf("dnsd: queries=%d %s\n", total.Load(), strings.Join(parts, " "))
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	for s := range sig {
		report()
		if s != syscall.SIGUSR1 {
			return
		}
	}
}

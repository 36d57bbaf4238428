package server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
)

// proxyV2 returns a PROXY protocol v2 header for a TCP connection from
// src to dst.
func proxyV2(src, dst netip.AddrPort) string {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21")
	if src.Addr().Is4() {
		b = append(b, 0x11)
		b = binary.BigEndian.AppendUint16(b, 12)
	} else {
		b = append(b, 0x21)
		b = binary.BigEndian.AppendUint16(b, 36)
	}
	b = append(b, src.Addr().AsSlice()...)
	b = append(b, dst.Addr().AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	return string(b)
}

func TestProxyProtocol(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	var mu sync.Mutex
	var seen []netip.Addr // RemoteIP as NewSession saw it
	b.onConnect = func(ctx context.Context, c *Conn) error {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, c.RemoteIP())
		return nil
	}
	srv := &Server{Handler: b, Hostname: "mx.test", Logger: discardLogger, MaxConnectionsPerIP: 1}
	listen := func(trusted string) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ProxyListener(l, []netip.Prefix{netip.MustParsePrefix(trusted)})) }()
		t.Cleanup(func() {
			srv.Close()
			if err := <-done; !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve = %v", err)
			}
		})
		return l.Addr().String()
	}
	trusted, untrusted := listen("127.0.0.0/8"), listen("192.0.2.0/24")
	dial := func(addr, header string) *client {
		t.Helper()
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		c := &client{t: t, raw: raw, nc: raw, br: bufio.NewReader(raw)}
		c.write(header)
		return c
	}
	deliver := func(c *client) {
		t.Helper()
		c.run(`
			S: 220 mx.test
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
			C: QUIT
			S: 221
			S: EOF
		`)
	}
	lastMessage := func() *message {
		t.Helper()
		msgs := b.Messages()
		if len(msgs) == 0 {
			t.Fatal("no message")
		}
		return msgs[len(msgs)-1]
	}

	cases := []struct {
		name, header, ip, received string
	}{
		{"v1 TCP4", "PROXY TCP4 203.0.113.7 127.0.0.1 5555 25\r\n", "203.0.113.7", "[203.0.113.7]"},
		{"v1 TCP6", "PROXY TCP6 2001:db8::7 ::1 5555 25\r\n", "2001:db8::7", "[IPv6:2001:db8::7]"},
		{"v2 TCP4", proxyV2(netip.MustParseAddrPort("203.0.113.8:5555"), netip.MustParseAddrPort("127.0.0.1:25")), "203.0.113.8", "[203.0.113.8]"},
		{"v2 TCP6", proxyV2(netip.MustParseAddrPort("[2001:db8::8]:5555"), netip.MustParseAddrPort("[::1]:25")), "2001:db8::8", "[IPv6:2001:db8::8]"},
	}
	for _, tc := range cases {
		deliver(dial(trusted, tc.header))
		m := lastMessage()
		equal(t, tc.name+": RemoteIP in MAIL", m.remoteIP, netip.MustParseAddr(tc.ip))
		if !strings.Contains(m.received, "("+tc.received+")") {
			t.Errorf("%s: Received header %q lacks %s", tc.name, m.received, tc.received)
		}
	}

	// A header with the first command in the same segment.
	c := dial(trusted, "PROXY TCP4 203.0.113.9 127.0.0.1 5555 25\r\nEHLO early.test\r\n")
	c.run(`
		S: 220 mx.test
		S: 250-mx.test greets early.test
		C: QUIT
		S: 221
		S: EOF
	`)

	// Connection limits count the client's address, not the proxy's.
	a := dial(trusted, "PROXY TCP4 198.51.100.1 127.0.0.1 5555 25\r\n")
	a.expect("220 mx.test")
	dial(trusted, "PROXY TCP4 198.51.100.1 127.0.0.1 5556 25\r\n").run(`
		S: 421 4.7.0
		S: EOF
	`)
	other := dial(trusted, "PROXY TCP4 198.51.100.2 127.0.0.1 5555 25\r\n")
	other.expect("220 mx.test")
	a.run(`
		C: QUIT
		S: 221
		S: EOF
	`)
	other.run(`
		C: QUIT
		S: 221
		S: EOF
	`)

	mu.Lock()
	before := len(seen)
	mu.Unlock()
	// From a trusted address, a missing or broken header gets the
	// connection closed before any hook could take the proxy's address
	// for the client's.
	for _, bad := range []string{"EHLO client.test\r\n", "PROXY TCP4 nonsense\r\n", "PROXY TCP4 203.0.113.7 127.0.0.1 5555\r\n"} {
		dial(trusted, bad).expectEOF()
	}
	// From an untrusted address, even a good header is refused.
	for range 2 {
		dial(untrusted, "PROXY TCP4 203.0.113.7 127.0.0.1 5555 25\r\n").expectEOF()
	}
	// And both listeners go on serving.
	deliver(dial(trusted, "PROXY TCP4 203.0.113.10 127.0.0.1 5555 25\r\n"))
	equal(t, "RemoteIP", lastMessage().remoteIP, netip.MustParseAddr("203.0.113.10"))
	dial(untrusted, "").expectEOF()

	mu.Lock()
	defer mu.Unlock()
	for _, ip := range seen[before:] {
		if ip != netip.MustParseAddr("203.0.113.10") {
			t.Errorf("NewSession saw %v from a connection without a valid header", ip)
		}
	}
}

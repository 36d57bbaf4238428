package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"strconv"
	"strings"
	"testing"
)

// TestStartTLSInjection is CVE-2011-0411: a command pipelined in the clear
// right after STARTTLS must be thrown away, not run inside the TLS session
// (RFC 3207 4.2).
func TestStartTLSInjection(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{StartTLS: true})
	c := dialRaw(t, d.SMTP)
	c.cmd("EHLO client.example", "250")
	c.send("STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
	c.expect("220 ")
	if c.r.Buffered() > 0 {
		t.Fatalf("server sent more after 220 to STARTTLS")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(readFile(t, certFile))
	tc := tls.Client(c.c, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.c, c.r = tc, bufio.NewReader(tc)
	// Had the injected MAIL run, this MAIL would be "nested" (503), or a
	// reply to it would be waiting before the EHLO's.
	ehlo := c.cmd("EHLO client.example", "250")
	if strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("STARTTLS offered again inside TLS:\n%s", ehlo)
	}
	c.cmd("MAIL FROM:<a@example.com>", "250 ")
	c.cmd("RCPT TO:<b@example.com>", "250 ")
	c.cmd("DATA", "354 ")
	msg := testMessage("after-starttls")
	c.send(dotStuff(msg) + ".\r\n")
	c.expect("250 ")
	c.cmd("QUIT", "221 ")
	files := d.waitMessages(1)
	d.check(files[0], msg, ` with ESMTPS id `)
}

// TestMaxSize checks --max-size both ways: a client that declares SIZE
// (curl) is refused at MAIL, one that does not (swaks) after the data.
func TestMaxSize(t *testing.T) {
	t.Parallel()
	const limit = 2000
	d := startDaemon(t, daemonOptions{Args: []string{"--max-size", strconv.Itoa(limit)}})
	big := append(testMessage("too-big"), []byte(strings.Repeat("y", 900)+"\r\n")...)
	if len(big) <= limit {
		t.Fatalf("test message is only %d bytes", len(big))
	}
	path := writeFile(t, "big.eml", big)

	r := curl(t, nil, "smtp://"+d.SMTP+"/client.example", "--mail-from", "a@example.com", "--mail-rcpt", "b@example.com", "-T", path)
	if r.Code == 0 {
		t.Errorf("curl delivered a message over --max-size")
	}
	if !strings.Contains(r.Stderr, "< 250-SIZE "+strconv.Itoa(limit)) {
		t.Errorf("EHLO does not advertise SIZE %d", limit)
	}
	if !strings.Contains(r.Stderr, "> MAIL FROM:<a@example.com> SIZE="+strconv.Itoa(len(big))) || !strings.Contains(r.Stderr, "< 552 5.3.4 ") {
		t.Errorf("curl's declared SIZE was not refused with 552 5.3.4 at MAIL")
	}

	r = swaks(t, d.SMTP, "--from", "a@example.com", "--to", "b@example.com", "--data", "@"+path)
	if r.Code == 0 {
		t.Errorf("swaks delivered a message over --max-size")
	}
	if !strings.Contains(r.Stdout, "<** 552 5.3.4 ") {
		t.Errorf("swaks' message was not refused with 552 5.3.4")
	}
	d.noMessages()

	// A message within the limit on the same daemon still goes through.
	small := testMessage("small")
	if len(small) > limit {
		t.Fatalf("small test message is %d bytes", len(small))
	}
	r = curl(t, nil, "smtp://"+d.SMTP+"/client.example", "--mail-from", "a@example.com", "--mail-rcpt", "b@example.com", "-T", writeFile(t, "small.eml", small))
	if r.Code != 0 {
		t.Fatalf("curl exited %d", r.Code)
	}
	files := d.waitMessages(1)
	d.check(files[0], small)
}

// TestMaxConnsPerIP checks --max-conns-per-ip: the connection over the
// limit is told 421 4.7.0 at once, and a slot frees when a client leaves.
func TestMaxConnsPerIP(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{Args: []string{"--max-conns-per-ip", "2"}})
	a := dialRaw(t, d.SMTP)
	dialRaw(t, d.SMTP)

	over := dialRawNoGreeting(t, d.SMTP)
	over.expect("421 4.7.0 ")
	over.expectClosed()

	a.cmd("QUIT", "221 ")
	a.expectClosed()
	// The server forgets a's slot when its session ends, just after the
	// 221; poll (bounded) until a new client is let in.
	d.waitLogCount(`msg=session .*outcome=quit`, 1)
	c := dialRaw(t, d.SMTP)
	c.cmd("EHLO client.example", "250")
}

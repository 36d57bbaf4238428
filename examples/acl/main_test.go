package main

import (
	"bytes"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
	"github.com/smtpkit/smtpkit/smtptest"
)

// syncBuffer is a log destination the sessions' goroutines share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func start(t *testing.T, allow string) (*smtptest.Server, *syncBuffer, *syncBuffer) {
	t.Helper()
	nets, err := parsePrefixes(allow)
	if err != nil {
		t.Fatal(err)
	}
	var logs, out syncBuffer
	h := newACL(nets, slog.New(slog.NewTextHandler(&logs, nil)), printer(&out))
	return smtptest.NewServer(t, h), &logs, &out
}

func TestRefusedClientGets554(t *testing.T) {
	srv, logs, out := start(t, "192.0.2.0/24, 2001:db8::/32")
	c := srv.Dial(t)
	r := c.Expect(554)
	if r.Enhanced != (smtp.EnhancedCode{5, 7, 1}) || !strings.Contains(r.Text(), "Access denied") {
		t.Errorf("greeting %s", r)
	}
	c.Cmd("EHLO client.example", 503) // nothing but QUIT
	c.Cmd("MAIL FROM:<a@example.org>", 503)
	c.Cmd("QUIT", 221)
	c.ExpectClosed()
	srv.Close()
	if !strings.Contains(logs.String(), "msg=refused") || !strings.Contains(logs.String(), "ip=127.0.0.1") {
		t.Errorf("log:\n%s", logs)
	}
	if out.String() != "" {
		t.Errorf("delivered: %s", out)
	}
}

func TestAllowedClient(t *testing.T) {
	srv, logs, out := start(t, "10.0.0.0/8,127.0.0.1")
	for range 2 {
		c := srv.Dial(t)
		c.HelloName = "client.example" // "localhost" has no dot: 504
		if err := c.SendMail("a@example.org", []string{"b@example.com"}, []byte("Subject: x\r\n\r\nhi\r\n")); err != nil {
			t.Fatalf("SendMail: %v", err)
		}
	}
	srv.Close()
	for _, want := range []string{"msg=accepted", "ip=127.0.0.1 connections=1", "ip=127.0.0.1 connections=2"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if want := "message from=<a@example.org> to=[b@example.com] client=127.0.0.1 helo=client.example bytes=18\n"; out.String() != want+want {
		t.Errorf("printed %q, want %q twice", out, want)
	}
}

func TestHelloCheck(t *testing.T) {
	srv, _, _ := start(t, "127.0.0.0/8")
	c := srv.Dial(t)
	c.Expect(220)
	for _, tt := range []struct {
		name string
		code int
	}{
		{"nodots", 504},
		{"trailing.", 504},
		{"client.example", 250},
		{"[127.0.0.1]", 250},
		{"mail.client.example.", 250},
	} {
		r := c.Cmd("EHLO "+tt.name, tt.code)
		if tt.code == 504 && r.Text() != "Helo command rejected: need fully-qualified hostname" {
			t.Errorf("EHLO %s: %s", tt.name, r)
		}
	}
	c.Cmd("QUIT", 221)
}

func TestParsePrefixes(t *testing.T) {
	got, err := parsePrefixes("10.1.2.3/8, ::1 ,192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("192.0.2.7/32")}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("got %v, want %v", got, want)
		}
	}
	if _, err := parsePrefixes("10.0.0.0/33"); err == nil {
		t.Error("no error for a bad prefix")
	}
}

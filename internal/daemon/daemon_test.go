package daemon

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func mustHash(t *testing.T, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadUsers(t *testing.T) {
	ha, hb := mustHash(t, "a-secret"), mustHash(t, "b-secret")
	p := writeTemp(t, "users", "# comment\n\nalice:"+ha+"\r\n  bob : "+hb+"  \n#carol:"+ha+"\n")
	users, err := LoadUsers(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2 || string(users["alice"]) != ha || string(users["bob"]) != hb {
		t.Errorf("LoadUsers = %q", users)
	}

	for _, tc := range []struct{ name, content, wantErr string }{
		{"no colon", "alice\n", ":1: want user:bcrypt-hash"},
		{"empty user", "\n:" + ha + "\n", ":2: want user:bcrypt-hash"},
		{"not bcrypt", "alice:{SHA}abc\n", ":1: "},
		{"empty hash", "alice:\n", ":1: "},
		{"plain password", "alice:secret\n", ":1: "},
		{"duplicate", "alice:" + ha + "\nalice:" + hb + "\n", `:2: user "alice" listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeTemp(t, "users", tc.content)
			_, err := LoadUsers(p)
			if err == nil || !strings.Contains(err.Error(), p+tc.wantErr) {
				t.Errorf("LoadUsers: %v, want an error containing %q", err, p+tc.wantErr)
			}
		})
	}
	if _, err := LoadUsers(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestAuthPassword(t *testing.T) {
	h := &handler{log: quietLogger(), users: map[string][]byte{"alice": []byte(mustHash(t, "pässword ✓"))}}
	s := &authSession{&session{h: h}}
	ctx := context.Background()
	for _, tc := range []struct {
		name, identity, user, pass string
		want                       string // "" ok, "fail" ErrAuthFailed, else the reply code
	}{
		{"right", "", "alice", "pässword ✓", ""},
		{"identity equals user", "alice", "alice", "pässword ✓", ""},
		{"wrong password", "", "alice", "password", "fail"},
		{"empty password", "", "alice", "", "fail"},
		{"unknown user", "", "mallory", "pässword ✓", "fail"},
		{"user case matters", "", "Alice", "pässword ✓", "fail"},
		{"identity mismatch", "bob", "alice", "pässword ✓", "535 5.7.8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.AuthPassword(ctx, tc.identity, tc.user, tc.pass)
			switch tc.want {
			case "":
				if err != nil {
					t.Errorf("AuthPassword: %v, want nil", err)
				}
			case "fail":
				if !errors.Is(err, server.ErrAuthFailed) {
					t.Errorf("AuthPassword: %v, want ErrAuthFailed", err)
				}
			default:
				var e *smtp.Error
				if !errors.As(err, &e) || e.Code != 535 || e.EnhancedCode != (smtp.EnhancedCode{5, 7, 8}) {
					t.Errorf("AuthPassword: %v, want %s", err, tc.want)
				}
			}
		})
	}
}

// TestDummyHashCost: an unknown user's password is checked against a hash
// as costly as the dearest real one, so timing does not reveal user names.
func TestDummyHashCost(t *testing.T) {
	h5, _ := bcrypt.GenerateFromPassword([]byte("x"), 5)
	h6, _ := bcrypt.GenerateFromPassword([]byte("y"), 6)
	h := &handler{users: map[string][]byte{"a": h5, "b": h6}}
	if c, err := bcrypt.Cost(h.dummyHash()); err != nil || c != 6 {
		t.Errorf("dummy hash cost %d (%v), want 6", c, err)
	}
	if string(h.dummyHash()) != string(h.dummy) {
		t.Errorf("dummy hash not kept")
	}
}

// remoteListener makes every accepted connection look as if it came from
// remote, to try the relay rule without a non-loopback interface.
type remoteListener struct {
	net.Listener
	remote net.Addr
}

func (l remoteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return remoteConn{c, l.remote}, nil
}

type remoteConn struct {
	net.Conn
	remote net.Addr
}

func (c remoteConn) RemoteAddr() net.Addr { return c.remote }

// serveHandler serves h on a loopback listener whose connections appear to
// come from remote (nil: as they are) and returns a connected client that
// has read the greeting and said EHLO.
func serveHandler(t *testing.T, h *handler, remote net.Addr) *textproto.Conn {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var sl net.Listener = l
	if remote != nil {
		sl = remoteListener{l, remote}
	}
	srv := &server.Server{Hostname: "mx.test", Handler: h, AllowInsecureAuth: true, Logger: quietLogger()}
	done := make(chan struct{})
	go func() { srv.Serve(sl); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	c, err := textproto.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	expect(t, c, "", 220)
	expect(t, c, "EHLO client.example", 250)
	return c
}

// expect sends cmd (unless empty) and checks the reply code; it returns
// the reply text.
func expect(t *testing.T, c *textproto.Conn, cmd string, code int) string {
	t.Helper()
	if cmd != "" {
		if err := c.PrintfLine("%s", cmd); err != nil {
			t.Fatal(err)
		}
	}
	got, msg, err := c.ReadResponse(0)
	if got != code {
		t.Fatalf("%q: got %d %s (%v), want %d", cmd, got, msg, err, code)
	}
	return msg
}

// TestRelayRule: loopback clients may send; anyone else must authenticate
// first (530 5.7.0), so the daemon is not an open relay.
func TestRelayRule(t *testing.T) {
	users := map[string][]byte{"alice": []byte(mustHash(t, "secret"))}
	remote := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 40000}
	plain := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00secret"))

	t.Run("loopback", func(t *testing.T) {
		c := serveHandler(t, &handler{log: quietLogger(), discard: true}, nil)
		expect(t, c, "MAIL FROM:<a@example.com>", 250)
	})
	t.Run("remote without users", func(t *testing.T) {
		c := serveHandler(t, &handler{log: quietLogger(), discard: true}, remote)
		if msg := expect(t, c, "MAIL FROM:<a@example.com>", 530); !strings.HasPrefix(msg, "5.7.0 ") {
			t.Errorf("reply text %q, want 5.7.0", msg)
		}
		expect(t, c, "RCPT TO:<b@example.com>", 503) // no transaction started
	})
	t.Run("remote IPv4-mapped IPv6", func(t *testing.T) {
		mapped := &net.TCPAddr{IP: net.ParseIP("::ffff:198.51.100.7"), Port: 40000}
		c := serveHandler(t, &handler{log: quietLogger(), discard: true}, mapped)
		expect(t, c, "MAIL FROM:<a@example.com>", 530)
	})
	t.Run("remote loopback IPv6", func(t *testing.T) {
		c := serveHandler(t, &handler{log: quietLogger(), discard: true}, &net.TCPAddr{IP: net.IPv6loopback, Port: 40000})
		expect(t, c, "MAIL FROM:<a@example.com>", 250)
	})
	t.Run("remote after failed AUTH", func(t *testing.T) {
		c := serveHandler(t, &handler{log: quietLogger(), discard: true, users: users}, remote)
		expect(t, c, "AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice\x00wrong")), 535)
		expect(t, c, "MAIL FROM:<a@example.com>", 530)
	})
	t.Run("remote authenticated", func(t *testing.T) {
		c := serveHandler(t, &handler{log: quietLogger(), discard: true, users: users}, remote)
		expect(t, c, "MAIL FROM:<a@example.com>", 530)
		expect(t, c, plain, 235)
		expect(t, c, "MAIL FROM:<a@example.com>", 250)
		expect(t, c, "RCPT TO:<b@example.com>", 250)
		expect(t, c, "DATA", 354)
		expect(t, c, "Subject: x\r\n\r\nhi\r\n.", 250)
	})
}

func TestRunConfigErrors(t *testing.T) {
	dir := t.TempDir()
	file := writeTemp(t, "not-a-dir", "x")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"tls-listen without cert", Config{TLSListen: []string{"127.0.0.1:0"}}, "--tls-listen needs --tls-cert"},
		{"missing cert", Config{TLSCert: filepath.Join(dir, "nope.pem"), TLSKey: filepath.Join(dir, "nope.key")}, "tls: "},
		{"key without cert", Config{TLSKey: filepath.Join(dir, "nope.key")}, "tls: "},
		{"missing users", Config{UsersFile: filepath.Join(dir, "nope")}, "no such file"},
		{"bad users", Config{UsersFile: writeTemp(t, "users", "alice\n")}, "want user:bcrypt-hash"},
		{"data dir is a file", Config{DataDir: file}, "maildir: "},
		{"address in use", Config{Listen: []string{busy.Addr().String()}}, "address already in use"},
		{"bad address", Config{Listen: []string{"no-port"}}, "missing port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Logger = quietLogger()
			data := filepath.Join(t.TempDir(), "data")
			if cfg.DataDir == "" {
				cfg.DataDir = data
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := Run(ctx, cfg)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Run: %v, want an error containing %q", err, tc.wantErr)
			}
			// A configuration error leaves nothing on disk.
			if cfg.DataDir == data && !strings.Contains(tc.name, "address") {
				if _, err := os.Stat(data); !os.IsNotExist(err) {
					t.Errorf("Run created %s before failing (stat: %v)", data, err)
				}
			}
		})
	}
}

// TestRunDeliversAndStops runs the daemon in process: Ready reports the
// bound addresses, a message lands in the Maildir, and cancelling the
// context stops Run cleanly.
func TestRunDeliversAndStops(t *testing.T) {
	data := t.TempDir()
	addrs := make(chan []net.Addr, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- Run(ctx, Config{
			Listen:     []string{"127.0.0.1:0"},
			LMTPListen: []string{"127.0.0.1:0"},
			DataDir:    data,
			Hostname:   "mx.test",
			Logger:     quietLogger(),
			Ready:      func(a []net.Addr) { addrs <- a },
		})
	}()
	var bound []net.Addr
	select {
	case bound = <-addrs:
	case err := <-errc:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not become ready")
	}
	if len(bound) != 2 {
		t.Fatalf("Ready got %v, want two addresses", bound)
	}
	c, err := textproto.Dial("tcp", bound[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expect(t, c, "", 220)
	expect(t, c, "EHLO client.example", 250)
	expect(t, c, "MAIL FROM:<a@example.com>", 250)
	expect(t, c, "RCPT TO:<b@example.com>", 250)
	expect(t, c, "DATA", 354)
	expect(t, c, "Subject: x\r\n\r\n..dot\r\n.", 250)
	expect(t, c, "QUIT", 221)

	ents, err := os.ReadDir(filepath.Join(data, "maildir", "new"))
	if err != nil || len(ents) != 1 {
		t.Fatalf("maildir/new: %v, %v; want one message", ents, err)
	}
	b, err := os.ReadFile(filepath.Join(data, "maildir", "new", ents[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "Received: from client.example ([127.0.0.1])\r\n\tby mx.test with ESMTP id ") ||
		!strings.HasSuffix(string(b), "\r\nSubject: x\r\n\r\n.dot\r\n") {
		t.Errorf("message file:\n%q", b)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Run did not return after cancel")
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means an error
	}{
		{"10.0.0.7", "10.0.0.7/32"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"::1", "::1/128"},
		{"::ffff:192.0.2.1", "192.0.2.1/32"},
		{"2001:db8::/32", "2001:db8::/32"},
		{"10.0.0.0/33", ""},
		{"lb.example", ""},
		{"", ""},
	} {
		p, err := ParsePrefix(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParsePrefix(%q) = %v, want an error", tc.in, p)
		case tc.want != "" && (err != nil || p.String() != tc.want):
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tc.in, p, err, tc.want)
		}
	}
}

package remote_test

import (
	"bytes"
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/delivery"
	"github.com/smtpkit/smtpkit/delivery/remote"
	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
	"github.com/smtpkit/smtpkit/smtptest"
)

// testTimeout bounds every Deliver and wait, so that a failing test fails
// instead of hanging.
const testTimeout = 10 * time.Second

const (
	testUser     = "relay@example.org"
	testPassword = "s3cret pass"
	testFrom     = "alice@sender.test"
	// testBody has lines that start with a dot, which must arrive as they
	// are once the server has undone the dot-stuffing.
	testBody = "From: alice@sender.test\r\nSubject: smarthost test\r\n\r\n.a line with a leading dot\r\n..two dots\r\n.\r\nend\r\n"
)

// mailhost is the smarthost's handler: it knows one account and refuses
// the recipients in refuse. The smtptest.Recorder around it records the
// connections and the messages it accepts (envelope, body, TLS and the
// authenticated identity).
type mailhost struct {
	// greeting, if set, refuses every connection with this reply.
	greeting *smtp.Error
	refuse   map[string]*smtp.Error // by address
	// mail and data, if set, answer MAIL and the end of the body; they
	// run on the sessions' goroutines.
	mail, data func() error
}

func (h *mailhost) NewSession(context.Context, *server.Conn) (server.Session, error) {
	if h.greeting != nil {
		return nil, h.greeting
	}
	return mailhostSession{h}, nil
}

type mailhostSession struct{ h *mailhost }

func (s mailhostSession) Mail(context.Context, smtp.Address, *smtp.MailOptions) error {
	if s.h.mail != nil {
		return s.h.mail()
	}
	return nil
}

func (s mailhostSession) Rcpt(_ context.Context, to smtp.Address, _ *smtp.RcptOptions) error {
	if e := s.h.refuse[to.String()]; e != nil {
		return e
	}
	return nil
}

// Data accepts, unless data says otherwise; the Recorder reads and keeps
// the body.
func (s mailhostSession) Data(context.Context, io.Reader) error {
	if s.h.data != nil {
		return s.h.data()
	}
	return nil
}

func (mailhostSession) Reset(context.Context)        {}
func (mailhostSession) Close(context.Context, error) {}

func (mailhostSession) AuthPassword(_ context.Context, _, username, password string) error {
	u := subtle.ConstantTimeCompare([]byte(username), []byte(testUser))
	p := subtle.ConstantTimeCompare([]byte(password), []byte(testPassword))
	if u&p == 1 {
		return nil
	}
	return server.ErrAuthFailed
}

// startSmarthost serves a mailhost on loopback in mode, with config (if
// any) applied to the server first.
func startSmarthost(t *testing.T, mode smtptest.Mode, h *mailhost, config func(*server.Server)) (*smtptest.Server, *smtptest.Recorder) {
	t.Helper()
	if h == nil {
		h = &mailhost{}
	}
	rec := &smtptest.Recorder{Handler: h}
	opts := []smtptest.Option{smtptest.WithMode(mode)}
	if config != nil {
		opts = append(opts, smtptest.WithConfig(config))
	}
	return smtptest.NewServer(t, rec, opts...), rec
}

// newTransport returns a smarthost transport to srv, with credentials,
// trusting srv's certificate; it is closed when the test ends.
func newTransport(t *testing.T, srv *smtptest.Server) *remote.Smarthost {
	tr := &remote.Smarthost{
		Addr:        srv.Addr,
		ImplicitTLS: srv.Mode() == smtptest.ModeImplicitTLS,
		Username:    testUser,
		Password:    testPassword,
		TLSConfig:   srv.ClientTLSConfig(),
		LocalName:   "relay.test",
	}
	t.Cleanup(tr.Close)
	return tr
}

func mustAddress(t *testing.T, s string) smtp.Address {
	t.Helper()
	a, err := smtp.ParseAddress(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func newMessage(t *testing.T, to ...string) *queue.Message {
	t.Helper()
	m := &queue.Message{ID: "test", Size: int64(len(testBody)),
		Envelope: queue.Envelope{From: mustAddress(t, testFrom), Received: time.Now()}}
	for _, a := range to {
		m.Recipients = append(m.Recipients, queue.Recipient{Address: mustAddress(t, a)})
	}
	return m
}

// bodyOpener opens testBody and counts opens and closes.
type bodyOpener struct {
	mu             sync.Mutex
	opened, closed int
}

type countedBody struct {
	io.Reader
	b *bodyOpener
}

func (c countedBody) Close() error {
	c.b.mu.Lock()
	defer c.b.mu.Unlock()
	c.b.closed++
	return nil
}

func (b *bodyOpener) open() (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.opened++
	return countedBody{strings.NewReader(testBody), b}, nil
}

// deliver runs one Deliver of m to the recipients at idx, and checks that
// it closed every body it opened. It may run on any goroutine.
func deliver(t *testing.T, tr *remote.Smarthost, m *queue.Message, idx ...int) []delivery.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	b := &bodyOpener{}
	res := tr.Deliver(ctx, m, "example.com", idx, b.open)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.opened != b.closed {
		t.Errorf("body opened %d times, closed %d times", b.opened, b.closed)
	}
	return res
}

// outcome is what one recipient should get: delivered (the zero value),
// or an *smtp.Error with this code and enhanced code.
type outcome struct {
	code int
	enh  smtp.EnhancedCode
}

var (
	delivered       = outcome{}
	noSTARTTLS      = outcome{451, smtp.EnhancedCode{4, 7, 5}}
	badTLS          = outcome{451, smtp.EnhancedCode{4, 7, 5}}
	badAuth         = outcome{451, smtp.EnhancedCode{4, 7, 8}}
	authUnavailable = outcome{451, smtp.EnhancedCode{4, 3, 5}}
	badGreeting     = outcome{451, smtp.EnhancedCode{4, 4, 2}}
	cannotConnect   = outcome{451, smtp.EnhancedCode{4, 4, 1}}
	noSuchUser      = outcome{550, smtp.EnhancedCode{5, 1, 1}}
)

func checkResults(t *testing.T, res []delivery.Result, want ...outcome) {
	t.Helper()
	if len(res) != len(want) {
		t.Errorf("%d results, want %d: %+v", len(res), len(want), res)
		return
	}
	for i, r := range res {
		if r.RemoteMTA != "127.0.0.1" {
			t.Errorf("result %d: RemoteMTA %q, want 127.0.0.1", i, r.RemoteMTA)
		}
		if want[i] == delivered {
			if r.Err != nil {
				t.Errorf("result %d: %v, want delivered", i, r.Err)
			}
			continue
		}
		var se *smtp.Error
		if !errors.As(r.Err, &se) {
			t.Errorf("result %d: %v (%T), want an *smtp.Error %d %s", i, r.Err, r.Err, want[i].code, want[i].enh)
			continue
		}
		if se.Code != want[i].code || se.EnhancedCode != want[i].enh {
			t.Errorf("result %d: %v, want %d %s", i, se, want[i].code, want[i].enh)
		}
	}
}

// checkReceived checks that the server accepted exactly one message per
// entry of wantTo, each from testFrom to those recipients with testBody
// byte for byte, over TLS, authenticated as wantUser.
func checkReceived(t *testing.T, rec *smtptest.Recorder, wantUser string, wantTo ...[]string) {
	t.Helper()
	msgs := rec.Messages()
	if len(msgs) != len(wantTo) {
		t.Fatalf("the smarthost accepted %d messages, want %d", len(msgs), len(wantTo))
	}
	for i, m := range msgs {
		var to []string
		for _, a := range m.Addresses() {
			to = append(to, a.String())
		}
		if m.From.String() != testFrom || !slices.Equal(to, wantTo[i]) {
			t.Errorf("message %d: envelope %s -> %v, want %s -> %v", i, m.From, to, testFrom, wantTo[i])
		}
		if !bytes.Equal(m.Data, []byte(testBody)) {
			t.Errorf("message %d: body\n%q\nwant\n%q", i, m.Data, testBody)
		}
		if m.Conn.TLS == nil {
			t.Errorf("message %d came over plaintext", i)
		}
		if m.Conn.AuthIdentity != wantUser {
			t.Errorf("message %d: authenticated as %q, want %q", i, m.Conn.AuthIdentity, wantUser)
		}
	}
}

// checkNoMail checks that no session got as far as MAIL.
func checkNoMail(t *testing.T, rec *smtptest.Recorder) {
	t.Helper()
	for _, s := range rec.Sessions() {
		for _, e := range s.Events {
			if e.Kind == smtptest.EventMail {
				t.Errorf("session %s got MAIL:\n%s", s.Conn.ID, strings.Join(s.Log(), "\n"))
			}
		}
	}
}

func TestSmarthostDeliver(t *testing.T) {
	// The system roots only: the server's certificate is self-signed.
	untrusted := &tls.Config{ServerName: "localhost", MinVersion: tls.VersionTLS12}
	tests := []struct {
		name   string
		mode   smtptest.Mode
		down   bool // nothing listens at the address
		noAuth bool // the server's sessions offer no AUTH
		// tune changes the transport from newTransport's defaults.
		tune func(*remote.Smarthost)
		// greeting, if set, refuses connections; refuse maps recipients
		// to the server's RCPT reply.
		greeting *smtp.Error
		refuse   map[string]*smtp.Error
		to       []string
		idx      []int
		want     []outcome
		// wantTo lists the recipients of the one message the server
		// accepted; nil means it accepted none.
		wantTo   []string
		wantUser string
	}{{
		name: "STARTTLS with AUTH",
		mode: smtptest.ModeSTARTTLS,
		// Only the recipients at idx are sent, in one transaction.
		to:       []string{"a@example.com", "b@elsewhere.test", "c@example.com"},
		idx:      []int{0, 2},
		want:     []outcome{delivered, delivered},
		wantTo:   []string{"a@example.com", "c@example.com"},
		wantUser: testUser,
	}, {
		name:     "implicit TLS with AUTH",
		mode:     smtptest.ModeImplicitTLS,
		to:       []string{"a@example.com"},
		idx:      []int{0},
		want:     []outcome{delivered},
		wantTo:   []string{"a@example.com"},
		wantUser: testUser,
	}, {
		name:   "STARTTLS without credentials",
		mode:   smtptest.ModeSTARTTLS,
		tune:   func(tr *remote.Smarthost) { tr.Username, tr.Password = "", "" },
		to:     []string{"a@example.com"},
		idx:    []int{0},
		want:   []outcome{delivered},
		wantTo: []string{"a@example.com"},
	}, {
		// With no ServerName, the certificate is checked against the
		// host of Addr, 127.0.0.1, which it names.
		name: "server name from Addr",
		mode: smtptest.ModeSTARTTLS,
		tune: func(tr *remote.Smarthost) {
			tr.TLSConfig = tr.TLSConfig.Clone()
			tr.TLSConfig.ServerName = ""
		},
		to:       []string{"a@example.com"},
		idx:      []int{0},
		want:     []outcome{delivered},
		wantTo:   []string{"a@example.com"},
		wantUser: testUser,
	}, {
		name: "no STARTTLS offered",
		mode: smtptest.ModePlain,
		to:   []string{"a@example.com", "b@example.com"},
		idx:  []int{0, 1},
		want: []outcome{noSTARTTLS, noSTARTTLS},
	}, {
		// Wrong credentials are the relay's fault, not the message's: it
		// stays queued (4xx) instead of bouncing on the server's 535.
		name: "wrong password",
		mode: smtptest.ModeSTARTTLS,
		tune: func(tr *remote.Smarthost) { tr.Password = "not " + testPassword },
		to:   []string{"a@example.com", "b@example.com"},
		idx:  []int{0, 1},
		want: []outcome{badAuth, badAuth},
	}, {
		name: "untrusted certificate, STARTTLS",
		mode: smtptest.ModeSTARTTLS,
		tune: func(tr *remote.Smarthost) { tr.TLSConfig = untrusted },
		to:   []string{"a@example.com"},
		idx:  []int{0},
		want: []outcome{badTLS},
	}, {
		// The handshake is part of dialing, and still reported as TLS.
		name: "untrusted certificate, implicit TLS",
		mode: smtptest.ModeImplicitTLS,
		tune: func(tr *remote.Smarthost) { tr.TLSConfig = untrusted },
		to:   []string{"a@example.com"},
		idx:  []int{0},
		want: []outcome{badTLS},
	}, {
		// Credentials set, but the server offers no AUTH: a configuration
		// error, so the mail stays queued instead of bouncing.
		name:   "no AUTH offered",
		mode:   smtptest.ModeSTARTTLS,
		noAuth: true,
		to:     []string{"a@example.com", "b@example.com"},
		idx:    []int{0, 1},
		want:   []outcome{authUnavailable, authUnavailable},
	}, {
		name:     "one recipient refused",
		mode:     smtptest.ModeSTARTTLS,
		refuse:   map[string]*smtp.Error{"nobody@example.com": smtp.NoSuchUser()},
		to:       []string{"nobody@example.com", "a@example.com"},
		idx:      []int{0, 1},
		want:     []outcome{noSuchUser, delivered},
		wantTo:   []string{"a@example.com"},
		wantUser: testUser,
	}, {
		name: "every recipient refused",
		mode: smtptest.ModeSTARTTLS,
		refuse: map[string]*smtp.Error{
			"nobody@example.com":  smtp.NoSuchUser(),
			"nothere@example.com": smtp.NoSuchUser(),
		},
		to:   []string{"nobody@example.com", "nothere@example.com"},
		idx:  []int{0, 1},
		want: []outcome{noSuchUser, noSuchUser},
	}, {
		name:     "refused at the greeting",
		mode:     smtptest.ModeSTARTTLS,
		greeting: smtp.NewError(421, smtp.EnhancedCode{4, 3, 2}, "Too busy"),
		to:       []string{"a@example.com"},
		idx:      []int{0},
		want:     []outcome{badGreeting},
	}, {
		name: "server down",
		mode: smtptest.ModeSTARTTLS,
		down: true,
		to:   []string{"a@example.com", "b@example.com"},
		idx:  []int{0, 1},
		want: []outcome{cannotConnect, cannotConnect},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var srv *smtptest.Server
			rec := &smtptest.Recorder{}
			if tc.down {
				// A closed listener's address: connections are refused.
				srv = smtptest.NewUnstartedServer(t, rec, smtptest.WithMode(tc.mode))
				srv.Close()
			} else if tc.noAuth {
				srv = smtptest.NewServer(t, rec, smtptest.WithMode(tc.mode)) // a Recorder alone offers no AUTH
			} else {
				srv, rec = startSmarthost(t, tc.mode, &mailhost{greeting: tc.greeting, refuse: tc.refuse}, nil)
			}
			tr := newTransport(t, srv)
			if tc.tune != nil {
				tc.tune(tr)
			}
			res := deliver(t, tr, newMessage(t, tc.to...), tc.idx...)
			checkResults(t, res, tc.want...)
			var wantTo [][]string
			if tc.wantTo != nil {
				wantTo = append(wantTo, tc.wantTo)
			}
			checkReceived(t, rec, tc.wantUser, wantTo...)
			if tc.want[0].code == 451 { // the connection failed: nothing got as far as MAIL
				checkNoMail(t, rec)
			}
		})
	}
}

// waitSessionsClosed waits until the server has seen n sessions, all
// ended, and returns them.
func waitSessionsClosed(t *testing.T, rec *smtptest.Recorder, n int) []smtptest.SessionRecord {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		ss := rec.Sessions()
		if len(ss) == n && !slices.ContainsFunc(ss, func(s smtptest.SessionRecord) bool { return !s.Closed }) {
			return ss
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d ended sessions; have %d: %+v", n, len(ss), ss)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSmarthostReusesConnection: messages in a row share one connection,
// which Close ends with QUIT; the next message opens a new one.
func TestSmarthostReusesConnection(t *testing.T) {
	srv, rec := startSmarthost(t, smtptest.ModeSTARTTLS, nil, nil)
	tr := newTransport(t, srv)
	m := newMessage(t, "a@example.com")
	for range 2 {
		checkResults(t, deliver(t, tr, m, 0), delivered)
	}
	to := []string{"a@example.com"}
	checkReceived(t, rec, testUser, to, to)
	if n := len(rec.Sessions()); n != 1 {
		t.Fatalf("two messages took %d connections, want 1", n)
	}

	tr.Close()
	ss := waitSessionsClosed(t, rec, 1)
	if ss[0].CloseErr != nil {
		t.Errorf("the idle connection ended with %v, want a QUIT", ss[0].CloseErr)
	}

	checkResults(t, deliver(t, tr, m, 0), delivered)
	checkReceived(t, rec, testUser, to, to, to)
	if n := len(rec.Sessions()); n != 2 {
		t.Errorf("%d connections after Close and a third message, want 2", n)
	}
}

// barrier returns a hook that holds its first n calls until all n have
// come, so that n transactions are in flight at once.
func barrier(n int) func() error {
	var mu sync.Mutex
	calls := 0
	all := make(chan struct{})
	return func() error {
		mu.Lock()
		calls++
		if calls == n {
			close(all)
		}
		held := calls <= n
		mu.Unlock()
		if !held {
			return nil
		}
		select {
		case <-all:
			return nil
		case <-time.After(testTimeout):
			return errors.New("barrier: timed out")
		}
	}
}

// TestSmarthostReplacesDeadConnections: pooled connections the server has
// given up on (here: one message a connection, then 421 and hang up) are
// replaced by a new one, and the message goes through on it, whether or
// not the server pipelines and however many dead ones the pool holds.
func TestSmarthostReplacesDeadConnections(t *testing.T) {
	for _, tc := range []struct {
		name    string
		disable server.Extension
		idle    int // connections in the pool, all dead
	}{
		{"pipelining", 0, 1},
		{"no pipelining", server.ExtPipelining, 1},
		{"two dead connections", 0, 2},
		{"two dead connections, no pipelining", server.ExtPipelining, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, rec := startSmarthost(t, smtptest.ModeSTARTTLS, &mailhost{data: barrier(tc.idle)}, func(s *server.Server) {
				s.MaxTransactions = 1
				s.DisableExtensions = tc.disable
			})
			tr := newTransport(t, srv)
			m := newMessage(t, "a@example.com")
			// tc.idle messages at once: a connection each, then pooled.
			var wg sync.WaitGroup
			for range tc.idle {
				wg.Go(func() { checkResults(t, deliver(t, tr, m, 0), delivered) })
			}
			wg.Wait()
			if n := len(rec.Sessions()); n != tc.idle {
				t.Fatalf("%d messages at once took %d connections", tc.idle, n)
			}

			checkResults(t, deliver(t, tr, m, 0), delivered)
			to := []string{"a@example.com"}
			checkReceived(t, rec, testUser, slices.Repeat([][]string{to}, tc.idle+1)...)
			if n := len(rec.Sessions()); n != tc.idle+1 {
				t.Errorf("%d connections, want %d", n, tc.idle+1)
			}
		})
	}
}

// TestSmarthost421NewConnection: a 421 on a new connection is each
// recipient's (temporary) answer, and the connection is not used again
// (RFC 5321 3.8), even if the server leaves it open.
func TestSmarthost421NewConnection(t *testing.T) {
	for _, tc := range []struct {
		name    string
		disable server.Extension
	}{
		{"pipelining", 0},
		{"no pipelining", server.ExtPipelining},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var once sync.Once
			h := &mailhost{mail: func() (err error) {
				once.Do(func() { err = smtp.NewError(421, smtp.EnhancedCode{4, 3, 2}, "Going away") })
				return err
			}}
			srv, rec := startSmarthost(t, smtptest.ModeSTARTTLS, h, func(s *server.Server) { s.DisableExtensions = tc.disable })
			tr := newTransport(t, srv)
			m := newMessage(t, "a@example.com", "b@example.com")
			goingAway := outcome{421, smtp.EnhancedCode{4, 3, 2}}
			checkResults(t, deliver(t, tr, m, 0, 1), goingAway, goingAway)
			checkReceived(t, rec, testUser)

			checkResults(t, deliver(t, tr, m, 0, 1), delivered, delivered)
			checkReceived(t, rec, testUser, []string{"a@example.com", "b@example.com"})
			if n := len(rec.Sessions()); n != 2 {
				t.Errorf("%d connections, want 2: the one that said 421 was used again", n)
			}
		})
	}
}

// TestSmarthostBodyUnreadable: a body the queue cannot open (deleted
// meanwhile, a read error) defers the message with 451 4.3.0 and leaves
// the connection, on which nothing was sent, to the next message.
func TestSmarthostBodyUnreadable(t *testing.T) {
	srv, rec := startSmarthost(t, smtptest.ModeSTARTTLS, nil, nil)
	tr := newTransport(t, srv)
	m := newMessage(t, "a@example.com")
	checkResults(t, deliver(t, tr, m, 0), delivered)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	broken := func() (io.ReadCloser, error) { return nil, errors.New("segment unreadable") }
	checkResults(t, tr.Deliver(ctx, m, "example.com", []int{0}, broken), outcome{451, smtp.EnhancedCode{4, 3, 0}})
	checkResults(t, deliver(t, tr, m, 0), delivered)
	to := []string{"a@example.com"}
	checkReceived(t, rec, testUser, to, to)
	if n := len(rec.Sessions()); n != 1 {
		t.Errorf("%d connections, want 1: the failed body must not cost the connection", n)
	}
}

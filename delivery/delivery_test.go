package delivery_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/delivery"
	"github.com/smtpkit/smtpkit/delivery/mx"
	"github.com/smtpkit/smtpkit/delivery/remote"
	"github.com/smtpkit/smtpkit/internal/dnstest"
	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/queue/spool"
	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
)

// mailbox is a receiving MX: it keeps every message and can be told to
// refuse some recipients, or everything for a while.
type mailbox struct {
	mu       sync.Mutex
	msgs     []got
	refuse   map[string]*smtp.Error // by local part
	tempFail int                    // refuse this many transactions with 451 first
}

type got struct {
	from smtp.Address
	to   []smtp.Address
	body []byte
}

func (b *mailbox) handler() server.Handler {
	return server.EnvelopeFunc(func(ctx context.Context, e *server.Envelope) error {
		data, err := io.ReadAll(e.Data)
		if err != nil {
			return err
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.tempFail > 0 {
			b.tempFail--
			return smtp.NewError(451, smtp.EnhancedCode{4, 3, 0}, "try again")
		}
		b.msgs = append(b.msgs, got{e.From, e.Addresses(), data})
		return nil
	})
}

type rcptFilter struct {
	server.Session
	b *mailbox
}

func (r rcptFilter) Rcpt(ctx context.Context, to smtp.Address, o *smtp.RcptOptions) error {
	r.b.mu.Lock()
	e := r.b.refuse[to.Local]
	r.b.mu.Unlock()
	if e != nil {
		return e
	}
	return r.Session.Rcpt(ctx, to, o)
}

type filterHandler struct{ b *mailbox }

func (f filterHandler) NewSession(ctx context.Context, c *server.Conn) (server.Session, error) {
	s, err := f.b.handler().NewSession(ctx, c)
	return rcptFilter{s, f.b}, err
}

func (b *mailbox) count() int { b.mu.Lock(); defer b.mu.Unlock(); return len(b.msgs) }

// startMX listens on ip:port (port 0 picks one) and returns the port.
func startMX(t *testing.T, ip string, port int, b *mailbox) int {
	t.Helper()
	l, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
	if err != nil {
		t.Fatal(err)
	}
	srv := &server.Server{Handler: filterHandler{b}, Hostname: "mx-" + ip, Logger: slog.New(slog.DiscardHandler)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().(*net.TCPAddr).Port
}

type rig struct {
	q     *spool.Spool
	sched *delivery.Scheduler
	dns   *dnstest.Server
	mxT   *remote.MX
	port  int
	stop  func()
}

// newRig starts a scheduler over a spool, delivering through DNS on
// loopback to MX hosts on port. Backoffs are made short.
func newRig(t *testing.T, port int, records ...string) *rig {
	return newRigWith(t, port, nil, records...)
}

func newRigWith(t *testing.T, port int, tune func(*delivery.Scheduler), records ...string) *rig {
	t.Helper()
	d := dnstest.New(t, records...)
	q, err := spool.Open(t.TempDir(), spool.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	tr := &remote.MX{Resolver: &mx.Resolver{Server: d.Addr, Timeout: 2 * time.Second}, Port: port, LocalName: "relay.test"}
	s := &delivery.Scheduler{Queue: q, Transport: tr, Hostname: "relay.test",
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Lifetime: time.Hour,
		Logger: slog.New(slog.DiscardHandler)}
	if tune != nil {
		tune(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	r := &rig{q: q, sched: s, dns: d, mxT: tr, port: port}
	r.stop = func() { cancel(); <-done; tr.Close(); q.Close() }
	t.Cleanup(r.stop)
	return r
}

func (r *rig) send(t *testing.T, from string, to ...string) string {
	t.Helper()
	env := &queue.Envelope{Received: time.Now()}
	if from != "" {
		env.From, _ = smtp.ParseAddress(from)
	}
	for _, a := range to {
		ad, err := smtp.ParseAddress(a)
		if err != nil {
			t.Fatal(err)
		}
		env.Recipients = append(env.Recipients, queue.Recipient{Address: ad})
	}
	body := "From: " + from + "\r\nSubject: test\r\nMessage-ID: <" + strings.Join(to, ",") + ">\r\n\r\nhello\r\n"
	id, err := r.q.Put(context.Background(), env, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.sched.Notify(id)
	return id
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func TestBestMXAndFallback(t *testing.T) {
	port := freePort(t)
	best, second := &mailbox{}, &mailbox{}
	startMX(t, "127.0.0.2", port, best)
	startMX(t, "127.0.0.3", port, second)
	// 127.0.0.4 has no listener: connection refused, so its domain falls
	// back to the next MX.
	r := newRig(t, port,
		"best.test. MX 10 mx1.best.test.", "best.test. MX 20 mx2.best.test.",
		"mx1.best.test. A 127.0.0.2", "mx2.best.test. A 127.0.0.3",
		"down.test. MX 10 dead.down.test.", "down.test. MX 20 alive.down.test.",
		"dead.down.test. A 127.0.0.4", "alive.down.test. A 127.0.0.3",
		"implicit.test. A 127.0.0.2",
	)
	r.send(t, "a@sender.test", "x@best.test")
	waitFor(t, "delivery to the best MX", func() bool { return best.count() == 1 })
	r.send(t, "a@sender.test", "y@down.test")
	waitFor(t, "fallback to the second MX", func() bool { return second.count() == 1 })
	r.send(t, "a@sender.test", "z@implicit.test")
	waitFor(t, "delivery to the implicit MX", func() bool { return best.count() == 2 })
	waitFor(t, "an empty queue", func() bool { return r.q.Len() == 0 })
	if second.count() != 1 {
		t.Fatalf("second MX got %d messages", second.count())
	}
	if m := best.msgs[0]; m.from.String() != "a@sender.test" || m.to[0].String() != "x@best.test" || !bytes.Contains(m.body, []byte("hello")) {
		t.Fatalf("delivered %+v", m)
	}
}

func TestRetryThenDeliver(t *testing.T) {
	port := freePort(t)
	b := &mailbox{tempFail: 2}
	startMX(t, "127.0.0.2", port, b)
	r := newRig(t, port, "retry.test. MX 10 mx.retry.test.", "mx.retry.test. A 127.0.0.2")
	id := r.send(t, "a@sender.test", "x@retry.test")
	waitFor(t, "delivery after two 451s", func() bool { return b.count() == 1 })
	waitFor(t, "an empty queue", func() bool { return r.q.Len() == 0 })
	_ = id
}

func TestPartialBounceAndNullMX(t *testing.T) {
	port := freePort(t)
	b := &mailbox{refuse: map[string]*smtp.Error{"nobody": smtp.NoSuchUser()}}
	sender := &mailbox{}
	startMX(t, "127.0.0.2", port, b)
	startMX(t, "127.0.0.3", port, sender)
	r := newRig(t, port,
		"dest.test. MX 10 mx.dest.test.", "mx.dest.test. A 127.0.0.2",
		"sender.test. MX 10 mx.sender.test.", "mx.sender.test. A 127.0.0.3",
		"nomail.test. MX 0 .",
	)
	r.send(t, "alice@sender.test", "ok@dest.test", "nobody@dest.test", "who@nomail.test")
	waitFor(t, "the good recipient", func() bool { return b.count() == 1 })
	waitFor(t, "the bounce at the sender's MX", func() bool { return sender.count() == 1 })
	waitFor(t, "an empty queue", func() bool { return r.q.Len() == 0 })
	if got := b.msgs[0].to; len(got) != 1 || got[0].Local != "ok" {
		t.Fatalf("delivered to %v", got)
	}
	bounce := sender.msgs[0]
	if !bounce.from.IsNull() || bounce.to[0].String() != "alice@sender.test" {
		t.Fatalf("bounce envelope %v -> %v", bounce.from, bounce.to)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(bounce.body))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("bounce type %q", mt)
	}
	text := string(bounce.body)
	for _, want := range []string{"Final-Recipient: rfc822; nobody@dest.test", "Status: 5.1.1", "Final-Recipient: rfc822; who@nomail.test", "Status: 5.1.10", "Action: failed"} {
		if !strings.Contains(text, want) {
			t.Errorf("bounce lacks %q", want)
		}
	}
	if strings.Contains(text, "Final-Recipient: rfc822; ok@dest.test") {
		t.Error("bounce names the delivered recipient")
	}
}

func TestExpiry(t *testing.T) {
	port := freePort(t)
	sender := &mailbox{}
	startMX(t, "127.0.0.3", port, sender)
	r := newRig(t, port,
		"gone.test. MX 10 mx.gone.test.", "mx.gone.test. A 127.0.0.4", // nothing listens there
		"sender.test. MX 10 mx.sender.test.", "mx.sender.test. A 127.0.0.3",
	)
	r.sched.Lifetime = 300 * time.Millisecond
	r.send(t, "alice@sender.test", "x@gone.test")
	waitFor(t, "the expiry bounce", func() bool { return sender.count() == 1 })
	if !strings.Contains(string(sender.msgs[0].body), "Status: 5.4.7") {
		t.Fatalf("expiry bounce:\n%s", sender.msgs[0].body)
	}
	waitFor(t, "an empty queue", func() bool { return r.q.Len() == 0 })
}

func TestBounceOfBounceDropped(t *testing.T) {
	port := freePort(t)
	b := &mailbox{refuse: map[string]*smtp.Error{"nobody": smtp.NoSuchUser()}}
	startMX(t, "127.0.0.2", port, b)
	r := newRig(t, port, "dest.test. MX 10 mx.dest.test.", "mx.dest.test. A 127.0.0.2")
	r.send(t, "", "nobody@dest.test")
	waitFor(t, "an empty queue", func() bool { return r.q.Len() == 0 })
	if b.count() != 0 {
		t.Fatal("something was delivered")
	}
	var n int
	r.q.Scan(context.Background(), func(*queue.Message) bool { n++; return true })
	if n != 0 {
		t.Fatal("a bounce to the null sender was queued")
	}
	var se *smtp.Error
	_ = errors.As(nil, &se)
}

// TestBacklogDrains queues far more messages than there are delivery
// slots: dispatch stops scanning once the slots are full, so every
// delivery that ends must start the next, or the queue stalls.
func TestBacklogDrains(t *testing.T) {
	port := freePort(t)
	b := &mailbox{}
	startMX(t, "127.0.0.2", port, b)
	r := newRigWith(t, port, func(s *delivery.Scheduler) { s.Concurrency = 2 },
		"many.test. MX 10 mx.many.test.", "mx.many.test. A 127.0.0.2")
	const n = 60
	for i := 0; i < n; i++ {
		r.send(t, "a@sender.test", fmt.Sprintf("r%d@many.test", i))
	}
	waitFor(t, "the whole backlog", func() bool { return b.count() == n })
	waitFor(t, "an empty queue", func() bool { return r.q.Len() == 0 })
}

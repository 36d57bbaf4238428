package delivery_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/delivery"
	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/queue/spool"
	"github.com/smtpkit/smtpkit/smtp"
)

// gateTransport delivers at once, except to domains in slow, whose
// deliveries wait until release is closed. It records the most deliveries
// in flight per domain and what was delivered.
type gateTransport struct {
	slow    map[string]bool
	release chan struct{}

	mu        sync.Mutex
	inflight  map[string]int
	peak      map[string]int
	delivered map[string]int // recipient address → deliveries
}

func (g *gateTransport) Deliver(ctx context.Context, m *queue.Message, domain string, idx []int, body func() (io.ReadCloser, error)) []delivery.Result {
	g.mu.Lock()
	g.inflight[domain]++
	g.peak[domain] = max(g.peak[domain], g.inflight[domain])
	g.mu.Unlock()
	if g.slow[domain] {
		select {
		case <-g.release:
		case <-ctx.Done():
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inflight[domain]--
	out := make([]delivery.Result, len(idx))
	for k, i := range idx {
		if ctx.Err() != nil {
			out[k].Err = ctx.Err()
			continue
		}
		g.delivered[m.Recipients[i].Address.String()]++
	}
	return out
}

func (g *gateTransport) count(addr string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.delivered[addr]
}

// TestSlowDomainDoesNotBlockOthers: a backlog to a domain at its
// concurrency limit must not take the delivery slots other domains need
// (head-of-line blocking), and the domain's limit still holds.
func TestSlowDomainDoesNotBlockOthers(t *testing.T) {
	q, err := spool.Open(t.TempDir(), spool.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	g := &gateTransport{slow: map[string]bool{"slow.test": true}, release: make(chan struct{}),
		inflight: map[string]int{}, peak: map[string]int{}, delivered: map[string]int{}}
	s := &delivery.Scheduler{Queue: q, Transport: g, Hostname: "relay.test", Concurrency: 4, DomainConcurrency: 2,
		MinBackoff: time.Hour, Lifetime: 24 * time.Hour, Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	released := false
	t.Cleanup(func() {
		if !released {
			close(g.release)
		}
		cancel()
		<-done
		q.Close()
	})
	send := func(to ...string) {
		t.Helper()
		env := &queue.Envelope{Received: time.Now()}
		env.From, _ = smtp.ParseAddress("a@sender.test")
		for _, a := range to {
			ad, err := smtp.ParseAddress(a)
			if err != nil {
				t.Fatal(err)
			}
			env.Recipients = append(env.Recipients, queue.Recipient{Address: ad})
		}
		id, err := q.Put(context.Background(), env, strings.NewReader("Subject: x\r\n\r\nhello\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		s.Notify(id)
	}

	const n = 12 // three times the delivery slots
	for i := range n {
		send("r" + string(rune('a'+i)) + "@slow.test")
	}
	waitFor(t, "the slow domain at its limit", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.inflight["slow.test"] == 2
	})
	// Another domain, alone and mixed with the slow one in one message.
	send("x@fast.test")
	send("y@fast.test", "z@slow.test")
	waitFor(t, "fast.test delivered while slow.test is stuck", func() bool {
		return g.count("x@fast.test") == 1 && g.count("y@fast.test") == 1
	})
	if got := g.count("z@slow.test"); got != 0 {
		t.Fatalf("z@slow.test delivered %d times while its domain was held", got)
	}

	close(g.release)
	released = true
	waitFor(t, "the slow backlog", func() bool {
		for i := range n {
			if g.count("r"+string(rune('a'+i))+"@slow.test") != 1 {
				return false
			}
		}
		return g.count("z@slow.test") == 1
	})
	waitFor(t, "an empty queue", func() bool { return q.Len() == 0 })
	g.mu.Lock()
	defer g.mu.Unlock()
	if p := g.peak["slow.test"]; p > 2 {
		t.Errorf("%d deliveries to slow.test at once, over DomainConcurrency 2", p)
	}
	for a, c := range g.delivered {
		if c != 1 {
			t.Errorf("%s delivered %d times", a, c)
		}
	}
}

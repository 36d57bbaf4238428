package delivery

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/queue"
)

// goneQueue knows no message: every attempt ends at Get, so a test sees
// which messages dispatch picks without delivering anything.
type goneQueue struct{ gets chan string }

func (q goneQueue) Put(context.Context, *queue.Envelope, io.Reader) (string, error) { return "", nil }
func (q goneQueue) Get(_ context.Context, id string) (*queue.Message, error) {
	if q.gets != nil {
		q.gets <- id
	}
	return nil, queue.ErrNotFound
}
func (q goneQueue) Body(context.Context, string) (io.ReadCloser, error) {
	return nil, queue.ErrNotFound
}
func (q goneQueue) Update(context.Context, *queue.Message) error { return nil }
func (q goneQueue) Delete(context.Context, string) error         { return nil }
func (q goneQueue) Scan(context.Context, func(*queue.Message) bool) error {
	return nil
}
func (q goneQueue) Close() error { return nil }

func newTestScheduler(q queue.Queue, now time.Time) *Scheduler {
	s := &Scheduler{Queue: q, Concurrency: 4, Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }}
	s.init()
	return s
}

// TestDispatchPicksDueInOrder: dispatch starts the messages that are due,
// earliest first and each once however often it was made due, no more than
// there are free slots, and reports when the next one is due.
func TestDispatchPicksDueInOrder(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	q := goneQueue{gets: make(chan string, 100)}
	s := newTestScheduler(q, now)
	for i := range 1000 {
		s.setDue(fmt.Sprintf("later%d", i), now.Add(time.Hour+time.Duration(i)*time.Second))
	}
	s.setDue("b", now.Add(-time.Minute))
	s.setDue("a", now.Add(-2*time.Minute))
	s.setDue("a", now.Add(-2*time.Minute)) // twice, as Notify and the start-up scan can
	s.setDue("c", now.Add(-30*time.Second))
	s.setDue("d", now.Add(-10*time.Second))
	s.setDue("e", now.Add(-5*time.Second)) // due, but the 5th with 4 slots
	s.setDue("gone", now.Add(-time.Hour))
	delete(s.due, "gone") // finished meanwhile: its heap entry is stale

	next := s.dispatch(context.Background())
	s.wg.Wait()
	close(q.gets)
	var got []string
	for id := range q.gets {
		got = append(got, id)
	}
	if len(got) != 4 {
		t.Fatalf("dispatch started %v, want 4 (the free slots)", got)
	}
	want := map[string]bool{"a": true, "b": true, "c": true, "d": true}
	for _, id := range got {
		if !want[id] {
			t.Errorf("dispatch started %q; want the 4 earliest due: a b c d", id)
		}
		delete(want, id)
	}
	if !next.IsZero() {
		t.Errorf("next = %v with a due message left over; want zero (the ends of deliveries kick)", next)
	}

	// The slots are free again: e goes, and then nothing until later0.
	q.gets = make(chan string, 10)
	s.Queue = q
	next = s.dispatch(context.Background())
	s.wg.Wait()
	close(q.gets)
	got = got[:0]
	for id := range q.gets {
		got = append(got, id)
	}
	if len(got) != 1 || got[0] != "e" {
		t.Errorf("second dispatch started %v, want [e]", got)
	}
	if want := now.Add(time.Hour); !next.Equal(want) {
		t.Errorf("next = %v, want %v (later0)", next, want)
	}
	if len(s.queue) > 2*len(s.due)+64 {
		t.Errorf("heap holds %d entries for %d messages", len(s.queue), len(s.due))
	}
}

// BenchmarkDispatchDeferredBacklog: one new message arrives while 100 000
// wait for a retry an hour away; dispatch must find it without looking at
// them all.
func BenchmarkDispatchDeferredBacklog(b *testing.B) {
	now := time.Now()
	s := newTestScheduler(goneQueue{}, now)
	for i := range 100_000 {
		s.setDue(fmt.Sprintf("deferred%d", i), now.Add(time.Hour+time.Duration(i)*time.Millisecond))
	}
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.mu.Lock()
		s.setDue(fmt.Sprintf("new%d", i), time.Time{})
		s.mu.Unlock()
		s.dispatch(ctx)
		s.wg.Wait()
	}
}

// TestGrantOfVanishedMessage: a domain slot handed to a message that is
// gone by the time it runs (deleted from the queue meanwhile) goes back to
// the domain, or the domain would lose a slot for good.
func TestGrantOfVanishedMessage(t *testing.T) {
	now := time.Now()
	s := newTestScheduler(goneQueue{}, now)
	s.mu.Lock()
	s.domains["slow.test"] = &domainSlots{busy: 1} // the handed-over slot
	s.granted["deleted"] = "slow.test"
	s.setDue("deleted", time.Time{})
	s.mu.Unlock()
	s.dispatch(context.Background())
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	if ds, ok := s.domains["slow.test"]; ok {
		t.Errorf("slow.test still counts %d deliveries in flight after its only grant vanished", ds.busy)
	}
	if len(s.granted) != 0 || len(s.due) != 0 {
		t.Errorf("granted %v, due %v: want both empty", s.granted, s.due)
	}
}

//go:build linux

package spool_test

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/internal/crashfs"
	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/queue/spool"
	"github.com/smtpkit/smtpkit/smtp"
)

// TestPowerCut writes to a spool on crashfs from several goroutines
// (messages put, recipients marked delivered, messages deleted, segments
// rolled and compacted) and, many times while they run, cuts the power and
// recovers a spool from what survived: every message whose Put had
// returned must be there with its envelope and body, and every Update that
// had returned must show.
func TestPowerCut(t *testing.T) {
	fsys := crashfs.ForTest(t)
	ctx := context.Background()
	// A directory chain that does not exist yet, as on a first start.
	q, err := spool.Open(filepath.Join(fsys.Dir, "data", "queue"), spool.Options{SegmentSize: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	body := func(i int) string {
		return fmt.Sprintf("Message-ID: <%d@crash.test>\r\n\r\n%s", i, strings.Repeat(fmt.Sprintf("line %d\r\n", i), 10+i%200))
	}

	type ack struct {
		i         int
		delivered bool // its Update (first recipient delivered) returned
	}
	var mu sync.Mutex
	acked := map[string]ack{}    // message ID → what was acknowledged
	deleted := map[string]bool{} // deleted, or being deleted
	const workers, perWorker = 4, 100
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range perWorker {
				i := w*perWorker + k
				from, _ := smtp.ParseAddress("a@sender.test")
				env := &queue.Envelope{From: from, Received: time.Now()}
				for _, r := range []string{"b@one.test", "c@two.test"} {
					ad, _ := smtp.ParseAddress(r)
					env.Recipients = append(env.Recipients, queue.Recipient{Address: ad})
				}
				id, err := q.Put(ctx, env, strings.NewReader(body(i)))
				if err != nil {
					t.Errorf("Put %d: %v", i, err)
					return
				}
				mu.Lock()
				acked[id] = ack{i: i}
				mu.Unlock()
				if i%3 == 0 {
					m, err := q.Get(ctx, id)
					if err != nil {
						t.Errorf("Get %s: %v", id, err)
						return
					}
					m.Recipients[0].Status = queue.Delivered
					if err := q.Update(ctx, m); err != nil {
						t.Errorf("Update %s: %v", id, err)
						return
					}
					mu.Lock()
					acked[id] = ack{i: i, delivered: true}
					mu.Unlock()
				}
				if i%5 == 0 {
					// Marked before the call: a delete in flight may
					// survive the cut or not.
					mu.Lock()
					deleted[id] = true
					mu.Unlock()
					if err := q.Delete(ctx, id); err != nil {
						t.Errorf("Delete %s: %v", id, err)
						return
					}
				}
				if k%10 == 9 {
					if err := q.Compact(ctx, 2); err != nil {
						t.Errorf("Compact: %v", err)
						return
					}
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	cuts := 0
	for finished := false; !finished; cuts++ {
		select {
		case <-done:
			finished = true
		default:
		}
		mu.Lock()
		before := make(map[string]ack, len(acked))
		for id, a := range acked {
			before[id] = a
		}
		mu.Unlock()
		snap := fsys.Cut(t)
		// A message being deleted by the cut may be gone or not (a
		// deleted one coming back means a second delivery, not a loss):
		// read after the cut, so that every delete begun before it counts.
		mu.Lock()
		for id := range deleted {
			delete(before, id)
		}
		mu.Unlock()
		r, err := spool.Open(filepath.Join(snap, "data", "queue"), spool.Options{})
		if err != nil {
			t.Fatalf("cut %d: recovering the spool: %v", cuts, err)
		}
		for id, a := range before {
			m, err := r.Get(ctx, id)
			if err != nil {
				t.Fatalf("cut %d: message %d (%s) was acknowledged before the cut and is gone: %v (%d recovered, %d acknowledged)",
					cuts, a.i, id, err, r.Len(), len(before))
			}
			if len(m.Recipients) != 2 || m.Recipients[1].Address.String() != "c@two.test" || m.From.String() != "a@sender.test" {
				t.Fatalf("cut %d: message %d recovered with envelope %+v", cuts, a.i, m.Envelope)
			}
			if a.delivered && m.Recipients[0].Status != queue.Delivered {
				t.Fatalf("cut %d: message %d: acknowledged Update lost (recipient 0 is %v)", cuts, a.i, m.Recipients[0].Status)
			}
			rc, err := r.Body(ctx, id)
			if err != nil {
				t.Fatalf("cut %d: body of message %d: %v", cuts, a.i, err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(b) != body(a.i) {
				t.Fatalf("cut %d: body of message %d: %v, %d bytes, want %d", cuts, a.i, err, len(b), len(body(a.i)))
			}
		}
		r.Close()
	}
	t.Logf("%d power cuts checked", cuts)
}

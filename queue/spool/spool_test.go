package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/queue/queuetest"
	"github.com/smtpkit/smtpkit/smtp"
)

func TestConformance(t *testing.T) {
	for _, segSize := range []int64{0, 4096} { // default, and tiny segments that roll constantly
		t.Run(fmt.Sprintf("segment=%d", segSize), func(t *testing.T) {
			queuetest.Run(t, func(t *testing.T) func() queue.Queue {
				dir := t.TempDir()
				return func() queue.Queue {
					s, err := Open(dir, Options{SegmentSize: segSize})
					if err != nil {
						t.Fatal(err)
					}
					return s
				}
			})
		})
	}
}

func env() *queue.Envelope {
	return &queue.Envelope{
		From:       smtp.Address{Local: "a", Domain: "example.com"},
		Recipients: []queue.Recipient{{Address: smtp.Address{Local: "b", Domain: "example.org"}}},
	}
}

// TestTornTail cuts the head segment at every byte of its last record and
// checks that recovery keeps exactly the messages written before it.
func TestTornTail(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.Put(ctx, env(), bytes.NewReader([]byte("first")))
	head := s.segs[len(s.segs)-1]
	before := head.written.Load()
	if _, err := s.Put(ctx, env(), bytes.NewReader(bytes.Repeat([]byte("x"), 100))); err != nil {
		t.Fatal(err)
	}
	after := head.written.Load()
	path := filepath.Join(dir, segName(head.num))
	s.Close()
	full, _ := os.ReadFile(path)
	for cut := before; cut < after; cut++ {
		d := t.TempDir()
		os.WriteFile(filepath.Join(d, segName(head.num)), full[:cut], 0o600)
		s2, err := Open(d, Options{})
		if err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if s2.Len() != 1 {
			t.Fatalf("cut at %d: %d messages, want 1", cut, s2.Len())
		}
		if _, err := s2.Get(ctx, first); err != nil {
			t.Fatalf("cut at %d: first message lost", cut)
		}
		// The torn tail is cut off, so new records land on a clean end.
		if st, _ := os.Stat(filepath.Join(d, segName(head.num))); st.Size() != before {
			t.Fatalf("cut at %d: segment is %d bytes, want %d", cut, st.Size(), before)
		}
		s2.Close()
	}
}

// TestSegmentsRemoved checks that segments go once nothing in them is
// live, and that Compact frees an old segment held by one waiting message.
func TestSegmentsRemoved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stuck, _ := s.Put(ctx, env(), bytes.NewReader([]byte("waits for days")))
	var ids []string
	for i := 0; i < 50; i++ {
		id, err := s.Put(ctx, env(), bytes.NewReader(bytes.Repeat([]byte("y"), 200)))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		m, _ := s.Get(ctx, id)
		m.Recipients[0].Status = queue.Delivered
		if err := s.Update(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	segs := func() int { m, _ := filepath.Glob(filepath.Join(dir, "*.seg")); return len(m) }
	// A delivery reading the stuck message while the compaction moves it
	// and removes its old segment must still read all of it.
	reading, err := s.Body(ctx, stuck)
	if err != nil {
		t.Fatal(err)
	}
	if n := segs(); n < 5 {
		t.Fatalf("only %d segments: the stuck message should be holding old ones", n)
	}
	if err := s.Compact(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if n := segs(); n > 3 {
		t.Fatalf("%d segments after Compact, want at most 3", n)
	}
	m, err := s.Get(ctx, stuck)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := s.Body(ctx, m.ID)
	var b bytes.Buffer
	b.ReadFrom(rc)
	rc.Close()
	if b.String() != "waits for days" {
		t.Fatalf("stuck body after compaction: %q", b.String())
	}
	b.Reset()
	if _, err := b.ReadFrom(reading); err != nil || b.String() != "waits for days" {
		t.Fatalf("body opened before the compaction: %q, %v", b.String(), err)
	}
	reading.Close()
	// And it survives a restart from the compacted spool.
	s.Close()
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Len() != 1 {
		t.Fatalf("%d messages after restart, want 1", s2.Len())
	}
}

// TestGroupCommit checks that concurrent Puts share fdatasyncs.
func TestGroupCommit(t *testing.T) {
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const n = 200
	done := make(chan error, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := s.Put(context.Background(), env(), bytes.NewReader(bytes.Repeat([]byte("z"), 1024)))
			done <- err
		}()
	}
	for i := 0; i < n; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	syncs := s.sync.count.Load()
	t.Logf("%d puts, %d fdatasyncs", n, syncs)
	if syncs >= n {
		t.Fatalf("%d fdatasyncs for %d concurrent puts: no group commit", syncs, n)
	}
}

func BenchmarkPut(b *testing.B) {
	for _, size := range []int{1024, 100 << 10} {
		for _, par := range []bool{false, true} {
			b.Run(fmt.Sprintf("size=%d/parallel=%v", size, par), func(b *testing.B) {
				s, err := Open(b.TempDir(), Options{})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				body := bytes.Repeat([]byte("b"), size)
				b.SetBytes(int64(size))
				b.ResetTimer()
				if par {
					b.SetParallelism(16)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if _, err := s.Put(context.Background(), env(), bytes.NewReader(body)); err != nil {
								b.Error(err)
								return
							}
						}
					})
				} else {
					for i := 0; i < b.N; i++ {
						if _, err := s.Put(context.Background(), env(), bytes.NewReader(body)); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.ReportMetric(float64(s.sync.count.Load())/float64(b.N), "syncs/op")
			})
		}
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{NoSync: true}); err == nil {
		t.Skip("no locking on this platform")
	} else if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v", err)
	}
	s.Close()
	s2, err := Open(dir, Options{NoSync: true})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s2.Close()
}

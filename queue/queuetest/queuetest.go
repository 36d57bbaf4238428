// Package queuetest is the conformance suite every queue.Queue backend
// must pass, so that the SMTP and delivery code can rely on one contract.
package queuetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/smtp"
)

// Factory opens a backend. reopen must return a backend over the same
// storage as the previous call (after Close), to check durability; a
// backend with nothing to reopen passes reopen=false by skipping.
type Factory func(t *testing.T) (open func() queue.Queue)

// Run runs the suite.
func Run(t *testing.T, factory Factory) {
	t.Run("PutGetBody", func(t *testing.T) { testPutGetBody(t, factory(t)) })
	t.Run("LargeBody", func(t *testing.T) { testLargeBody(t, factory(t)) })
	t.Run("UpdateAndDone", func(t *testing.T) { testUpdate(t, factory(t)) })
	t.Run("Delete", func(t *testing.T) { testDelete(t, factory(t)) })
	t.Run("Reopen", func(t *testing.T) { testReopen(t, factory(t)) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, factory(t)) })
	t.Run("FailedBody", func(t *testing.T) { testFailedBody(t, factory(t)) })
}

func env(rcpts ...string) *queue.Envelope {
	e := &queue.Envelope{
		From:        smtp.Address{Local: "sender", Domain: "example.com"},
		MailOptions: smtp.MailOptions{Body: smtp.Body8BitMIME, EnvelopeID: "env-1", Return: smtp.ReturnHeaders},
		Received:    time.Now().UTC().Truncate(time.Second),
		Client:      "client.test [127.0.0.1]",
	}
	for _, r := range rcpts {
		e.Recipients = append(e.Recipients, queue.Recipient{
			Address: smtp.Address{Local: r, Domain: "example.org"},
			Options: smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.NotifyFailure}, OriginalRecipientType: "rfc822", OriginalRecipient: r + "@example.org"},
		})
	}
	return e
}

func readBody(t *testing.T, q queue.Queue, id string) []byte {
	t.Helper()
	rc, err := q.Body(context.Background(), id)
	if err != nil {
		t.Fatalf("Body(%s): %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading body of %s: %v", id, err)
	}
	return b
}

func testPutGetBody(t *testing.T, open func() queue.Queue) {
	q := open()
	defer q.Close()
	ctx := context.Background()
	body := []byte("Subject: x\r\n\r\nhello\r\n")
	e := env("a", "b")
	id, err := q.Put(ctx, e, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	m, err := q.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if m.ID != id || m.Size != int64(len(body)) || m.From != e.From || len(m.Recipients) != 2 ||
		m.Recipients[1].Address.Local != "b" || m.Recipients[0].Options.OriginalRecipient != "a@example.org" ||
		m.MailOptions.EnvelopeID != "env-1" || !m.Received.Equal(e.Received) || m.Client != e.Client {
		t.Fatalf("Get returned %+v", m)
	}
	if got := readBody(t, q, id); !bytes.Equal(got, body) {
		t.Fatalf("body %q, want %q", got, body)
	}
	if _, err := q.Get(ctx, "nosuchid"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Get unknown: %v", err)
	}
	if _, err := q.Body(ctx, "nosuchid"); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Body unknown: %v", err)
	}
	// Get returns a copy: changing it does not change the queue.
	m.Recipients[0].Status = queue.Delivered
	if m2, _ := q.Get(ctx, id); m2.Recipients[0].Status != queue.Pending {
		t.Fatal("Get did not return a copy")
	}
}

func testLargeBody(t *testing.T, open func() queue.Queue) {
	q := open()
	defer q.Close()
	body := make([]byte, 3<<20+12345)
	rand.Read(body)
	id, err := q.Put(context.Background(), env("a"), bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, q, id); !bytes.Equal(got, body) {
		t.Fatalf("large body differs (%d bytes back, want %d)", len(got), len(body))
	}
}

func testUpdate(t *testing.T, open func() queue.Queue) {
	q := open()
	defer q.Close()
	ctx := context.Background()
	id, err := q.Put(ctx, env("a", "b"), bytes.NewReader([]byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := q.Get(ctx, id)
	next := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	m.Recipients[0].Status = queue.Delivered
	m.Recipients[1].Attempts = 1
	m.Recipients[1].NextAttempt = next
	m.Recipients[1].LastReply = "451 4.3.0 try later"
	if err := q.Update(ctx, m); err != nil {
		t.Fatal(err)
	}
	got, _ := q.Get(ctx, id)
	if got.Recipients[0].Status != queue.Delivered || !got.Recipients[1].NextAttempt.Equal(next) || got.Recipients[1].LastReply != "451 4.3.0 try later" {
		t.Fatalf("after Update: %+v", got.Recipients)
	}
	got.Recipients[1].Status = queue.Failed
	if err := q.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	// Failed but not yet bounced: still queued, so the bounce is not lost.
	if _, err := q.Get(ctx, id); err != nil {
		t.Fatalf("a failed recipient awaiting its bounce must keep the message: %v", err)
	}
	got.Recipients[1].Notified = true
	if err := q.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(ctx, id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("a message with every recipient final must be gone: %v", err)
	}
	if err := q.Update(ctx, got); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("Update of a removed message: %v", err)
	}
}

func testDelete(t *testing.T, open func() queue.Queue) {
	q := open()
	defer q.Close()
	ctx := context.Background()
	id, _ := q.Put(ctx, env("a"), bytes.NewReader([]byte("x")))
	if err := q.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(ctx, id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatal("deleted message still there")
	}
	if err := q.Delete(ctx, id); !errors.Is(err, queue.ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
}

func testReopen(t *testing.T, open func() queue.Queue) {
	ctx := context.Background()
	q := open()
	want := map[string][]byte{}
	for i := 0; i < 20; i++ {
		body := []byte(fmt.Sprintf("message %d\r\n", i))
		id, err := q.Put(ctx, env("a", "b"), bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		want[id] = body
	}
	var ids []string
	for id := range want {
		ids = append(ids, id)
	}
	// One done, one deleted, one half-delivered.
	m, _ := q.Get(ctx, ids[0])
	m.Recipients[0].Status, m.Recipients[1].Status = queue.Delivered, queue.Failed
	m.Recipients[1].Notified = true
	q.Update(ctx, m)
	delete(want, ids[0])
	q.Delete(ctx, ids[1])
	delete(want, ids[1])
	m, _ = q.Get(ctx, ids[2])
	m.Recipients[0].Status = queue.Delivered
	m.Recipients[1].Attempts = 3
	q.Update(ctx, m)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = open()
	defer q.Close()
	n := 0
	q.Scan(ctx, func(m *queue.Message) bool {
		n++
		body, ok := want[m.ID]
		if !ok {
			t.Errorf("unexpected message %s after reopen", m.ID)
			return true
		}
		if got := readBody(t, q, m.ID); !bytes.Equal(got, body) {
			t.Errorf("%s: body %q, want %q", m.ID, got, body)
		}
		if m.ID == ids[2] && (m.Recipients[0].Status != queue.Delivered || m.Recipients[1].Attempts != 3) {
			t.Errorf("state lost over reopen: %+v", m.Recipients)
		}
		return true
	})
	if n != len(want) {
		t.Fatalf("%d messages after reopen, want %d", n, len(want))
	}
}

func testConcurrent(t *testing.T, open func() queue.Queue) {
	q := open()
	defer q.Close()
	ctx := context.Background()
	const n = 64
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids[i], errs[i] = q.Put(ctx, env("a"), bytes.NewReader([]byte(fmt.Sprintf("body %d", i))))
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[ids[i]] {
			t.Fatalf("duplicate id %s", ids[i])
		}
		seen[ids[i]] = true
		if got := string(readBody(t, q, ids[i])); got != fmt.Sprintf("body %d", i) {
			t.Fatalf("body %d = %q", i, got)
		}
	}
}

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("client went away")
	}
	k := min(len(p), f.n)
	f.n -= k
	return k, nil
}

func testFailedBody(t *testing.T, open func() queue.Queue) {
	q := open()
	ctx := context.Background()
	if _, err := q.Put(ctx, env("a"), &failingReader{n: 200 << 10}); err == nil {
		t.Fatal("Put with a failing body succeeded")
	}
	n := 0
	q.Scan(ctx, func(*queue.Message) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d messages after a failed Put", n)
	}
	q.Close()
	q = open()
	defer q.Close()
	q.Scan(ctx, func(*queue.Message) bool { n++; return true })
	if n != 0 {
		t.Fatalf("%d messages after a failed Put and reopen", n)
	}
}

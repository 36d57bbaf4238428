package queuectl

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/queue/spool"
	"github.com/smtpkit/smtpkit/smtp"
)

type fakeSched struct{ notified []string }

func (f *fakeSched) Notify(id string) { f.notified = append(f.notified, id) }
func (f *fakeSched) RetryAll()        {}

func put(t *testing.T, q queue.Queue, n int) []string {
	var ids []string
	for i := 0; i < n; i++ {
		env := &queue.Envelope{From: smtp.Address{Local: "a", Domain: "x.test"}, Received: time.Now(),
			Recipients: []queue.Recipient{{Address: smtp.Address{Local: "b", Domain: "y.test"}, NextAttempt: time.Now().Add(time.Hour), LastReply: "451 4.4.1 later"}}}
		id, err := q.Put(context.Background(), env, strings.NewReader("Subject: s\r\nX: y\r\n\r\nbody\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func TestDirectAndSocket(t *testing.T) {
	ctx := context.Background()
	data := t.TempDir()
	q, err := spool.Open(QueueDir(data), spool.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	ids := put(t, q, 3)
	q.Close()

	// Stopped server: the command opens the spool itself.
	resp, err := Do(ctx, data, Request{Op: OpList})
	if err != nil || resp.Error != "" || len(resp.Messages) != 3 {
		t.Fatalf("list: %v %+v", err, resp)
	}
	resp, _ = Do(ctx, data, Request{Op: OpShow, ID: ids[0]})
	if resp.Header != "Subject: s\r\nX: y\r\n" {
		t.Fatalf("show header %q (%s)", resp.Header, resp.Error)
	}
	if resp, _ = Do(ctx, data, Request{Op: OpDelete, ID: ids[1]}); resp.Error != "" {
		t.Fatal(resp.Error)
	}
	if resp, _ = Do(ctx, data, Request{Op: OpBounce, ID: ids[2]}); resp.Error != "" {
		t.Fatal(resp.Error)
	}
	if resp, _ = Do(ctx, data, Request{Op: OpShow, ID: "nosuch"}); resp.Error == "" {
		t.Fatal("show of an unknown ID succeeded")
	}

	// Running server: the command goes through the socket, and the
	// server's scheduler hears of it.
	q, err = spool.Open(QueueDir(data), spool.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	sched := &fakeSched{}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go Serve(sctx, SocketPath(data), &Handler{Queue: q, Sched: sched}, nil)
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err = Do(ctx, data, Request{Op: OpList})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil || len(resp.Messages) != 2 {
		t.Fatalf("list through the socket: %v %+v", err, resp)
	}
	for _, m := range resp.Messages {
		if m.ID == ids[2] && (m.Recipients[0].Status != queue.Failed || m.Recipients[0].Notified) {
			t.Fatalf("bounced message awaits its DSN: %+v", m.Recipients[0])
		}
	}
	resp, err = Do(ctx, data, Request{Op: OpRetry})
	if err != nil || resp.Affected != 2 || len(sched.notified) != 2 {
		t.Fatalf("retry all: %v %+v %v", err, resp, sched.notified)
	}
	m, _ := q.Get(ctx, ids[0])
	if !m.Recipients[0].NextAttempt.IsZero() {
		t.Fatal("retry did not make the recipient due")
	}
}

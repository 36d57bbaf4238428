package server

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// shutdown runs Shutdown in the background; the channel gets its result.
func (h *harness) shutdown(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	go func() { done <- h.srv.Shutdown(ctx) }()
	return done
}

func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(ioTimeout):
		t.Fatal("Shutdown did not return")
		return nil
	}
}

func TestShutdownIdle(t *testing.T) {
	t.Parallel()
	inModes(t, allModes, func(t *testing.T, m mode) {
		b := newBackend(t)
		h := serve(t, m, &Server{Handler: b})
		greeted := h.dial()
		greeted.run(`
			C: EHLO client.test
			S: 250-mx.test
		`)
		fresh := h.dial()
		done := h.shutdown(context.Background())
		greeted.run(`
			S: 421 4.3.2 mx.test Service shutting down
			S: EOF
		`)
		fresh.run(`
			S: 421 4.3.2 mx.test Service shutting down
			S: EOF
		`)
		if err := result(t, done); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		if err := h.wait(); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
		for range 2 {
			if err := b.waitClose(); err == nil {
				t.Error("Close got nil for a session ended by Shutdown")
			}
		}
		if c, err := net.Dial("tcp", h.addr); err == nil {
			c.Close()
			t.Error("the listener still accepts after Shutdown")
		}
	})
}

func TestShutdownLetsTransactionsFinish(t *testing.T) {
	t.Parallel()
	inModes(t, allModes, func(t *testing.T, m mode) {
		b := newBackend(t)
		h := serve(t, m, &Server{Handler: b})
		inData := h.dial()
		inData.startTx()
		inData.run(`
			C: DATA
			S: 354
			C: first line
		`)
		inTx := h.dial()
		inTx.startTx()
		idle := h.dial()
		done := h.shutdown(context.Background())
		idle.run(`
			S: 421 4.3.2
			S: EOF
		`)
		if err := h.wait(); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
		// Shutdown keeps poking idle sessions; let it try a few times.
		time.Sleep(3 * shutdownPoll)
		inData.run(`
			C: last line
			C: .
			S: 250 2.0.0 OK
			S: 421 4.3.2
			S: EOF
		`)
		inTx.run(`
			C: NOOP
			S: 250 2.0.0
			C: BDAT 4 LAST
			W: body
			S: 250 2.0.0 OK
			S: 421 4.3.2
			S: EOF
		`)
		if err := result(t, done); err != nil {
			t.Errorf("Shutdown = %v", err)
		}
		msgs := b.Messages()
		if len(msgs) != 2 || msgs[0].body != "first line\r\nlast line\r\n" || msgs[1].body != "body" {
			t.Errorf("messages: %+v", msgs)
		}
	})
}

func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	inModes(t, allModes, func(t *testing.T, m mode) {
		b := newBackend(t)
		h := serve(t, m, &Server{Handler: b})
		c := h.dial()
		c.startTx() // a transaction in progress holds Shutdown up
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if err := result(t, h.shutdown(ctx)); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown = %v, want the context's error", err)
		}
		c.expectEOF()
		if err := b.waitClose(); err == nil {
			t.Error("Close got nil")
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		for i, ctx := range b.ctxs {
			if ctx.Err() == nil {
				t.Errorf("hook context %d not cancelled", i)
			}
		}
	})
}

func TestCloseCancelsHooks(t *testing.T) {
	t.Parallel()
	inModes(t, allModes, func(t *testing.T, m mode) {
		b := newBackend(t)
		entered := make(chan context.Context, 1)
		b.onData = func(ctx context.Context, r io.Reader) error {
			entered <- ctx
			<-ctx.Done()
			return ctx.Err()
		}
		h := serve(t, m, &Server{Handler: b})
		c := h.dial()
		c.startTx()
		c.run(`
			C: DATA
			S: 354
		`)
		c.sendData("blocked\r\n")
		var ctx context.Context
		select {
		case ctx = <-entered:
		case <-time.After(ioTimeout):
			t.Fatal("Data not called")
		}
		if err := h.srv.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		c.expectEOF()
		if err := b.waitClose(); err == nil {
			t.Error("Close hook got nil")
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Errorf("hook context: %v", ctx.Err())
		}
		if err := h.wait(); !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
		equal(t, "messages", len(b.Messages()), 0)
	})
}

func TestServeAfterShutdown(t *testing.T) {
	t.Parallel()
	for _, stop := range []string{"Shutdown", "Close"} {
		t.Run(stop, func(t *testing.T) {
			t.Parallel()
			srv := &Server{Handler: newBackend(t), Logger: discardLogger, Addr: "127.0.0.1:0"}
			if stop == "Shutdown" {
				if err := srv.Shutdown(context.Background()); err != nil {
					t.Fatalf("Shutdown of an idle server = %v", err)
				}
			} else {
				srv.Close()
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Serve(l); !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve = %v", err)
			}
			checkClosed(t, l)
			if err := srv.ListenAndServe(); !errors.Is(err, ErrServerClosed) {
				t.Errorf("ListenAndServe = %v", err)
			}
			if err := srv.ListenAndServeTLS("", ""); !errors.Is(err, ErrServerClosed) {
				t.Errorf("ListenAndServeTLS = %v", err)
			}
		})
	}
	t.Run("no Handler", func(t *testing.T) {
		t.Parallel()
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		if err := (&Server{}).Serve(l); err == nil || errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve without a Handler = %v", err)
		}
		checkClosed(t, l)
	})
}

func checkClosed(t *testing.T, l net.Listener) {
	t.Helper()
	l.(*net.TCPListener).SetDeadline(time.Now().Add(50 * time.Millisecond))
	c, err := l.Accept()
	if err == nil {
		c.Close()
	}
	if !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve left its listener open: Accept = %v", err)
	}
}

// TestWorkerReuse checks that one goroutine serves connection after
// connection, and that the idle ones end with the server.
func TestWorkerReuse(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	h := serve(t, modePlain, &Server{Handler: b})
	const n = 20
	for i := range n {
		c := h.dial()
		c.run(`
			C: EHLO client.test
			S: 250-mx.test
			C: QUIT
			S: 221 2.0.0 mx.test Bye
			S: EOF
		`)
		// Until the goroutine is back waiting, a new connection gets a
		// new one, which is right but not what this test is about. (It
		// still can: idle counts a goroutine a moment before it waits.)
		deadline := time.Now().Add(ioTimeout)
		for h.srv.idle.Load() < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("no idle session goroutine after session %d (%d alive)", i, h.srv.workers.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Without reuse there would be one per connection.
	if w := h.srv.workers.Load(); w < 1 || w > n/4 {
		t.Errorf("%d session goroutines after %d sequential connections, want 1 to %d", w, n, n/4)
	}
	h.srv.Close()
	deadline := time.Now().Add(ioTimeout)
	for h.srv.workers.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d session goroutines still alive after Close", h.srv.workers.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

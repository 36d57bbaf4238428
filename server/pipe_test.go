package server

import (
	"bufio"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
)

// pipeListener serves net.Pipe connections. A pipe hands each write to
// exactly one read, which lets a test decide where the server's reads
// end.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func servePipe(t *testing.T, srv *Server) func() *client {
	t.Helper()
	srv.Hostname, srv.Logger = "mx.test", discardLogger
	l := newPipeListener()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve = %v", err)
		}
	})
	return func() *client {
		cli, srvEnd := net.Pipe()
		select {
		case l.conns <- srvEnd:
		case <-l.done:
			t.Fatal("listener closed")
		}
		t.Cleanup(func() { cli.Close() })
		return &client{t: t, raw: cli, nc: cli, br: bufio.NewReader(cli)}
	}
}

// A CR at the end of one read of an over-long body line, and what follows
// it at the start of the next, must be judged together.
func TestDataBareCRAtReadBoundary(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 2000)
	cases := []struct {
		name, first, second, reply string
	}{
		{"CRLF split", long + "\r", "\n.\r\n", "554 5.6.0"},
		{"CR then a byte", long + "\r", "y\r\n.\r\n", "550 5.5.2"},
		{"CR then CR LF", long + "\r", "\r\n.\r\n", "550 5.5.2"},
		{"LF first", long, "\n.\r\n", "550 5.5.2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t)
			dial := servePipe(t, &Server{Handler: b})
			c := dial()
			c.run(`
				S: 220 mx.test
				C: EHLO client.test
				S: 250-mx.test
				C: MAIL FROM:<a@example.com>
				S: 250 2.1.0
				C: RCPT TO:<b@example.com>
				S: 250 2.1.5
				C: DATA
				S: 354
			`)
			c.write(tc.first) // a pipe delivers each write in a read of its own
			c.write(tc.second)
			c.expect(tc.reply)
			if tc.reply == "550 5.5.2" { // and the server hangs up
				c.nc.Close()
				b.waitClose()
				return
			}
			// The session goes on; a pipe has no address for the trace header.
			c.run(`
				C: MAIL FROM:<a@example.com>
				S: 250 2.1.0
				C: RCPT TO:<b@example.com>
				S: 250 2.1.5
				C: DATA
				S: 354
				C: .
				S: 250 2.0.0
				C: QUIT
				S: 221
				S: EOF
			`)
			msgs := b.Messages()
			if len(msgs) != 1 || msgs[0].remoteIP.IsValid() || !strings.HasPrefix(msgs[0].received, "Received: from client.test\r\n\tby mx.test ") {
				t.Errorf("messages: %+v", msgs)
			}
		})
	}
}

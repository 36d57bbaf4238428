// Package queuectl carries out `smtpkit queue` commands: through the
// running server's control socket when there is one, or on the spool
// directly when the server is stopped (the spool's lock tells which).
package queuectl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/queue/spool"
)

// Ops.
const (
	OpList   = "list"
	OpShow   = "show"
	OpRetry  = "retry"
	OpDelete = "delete"
	OpBounce = "bounce"
)

// Request is one command.
type Request struct {
	Op string `json:"op"`
	ID string `json:"id,omitempty"`
}

// Response is a command's result.
type Response struct {
	Error    string           `json:"error,omitempty"`
	Messages []*queue.Message `json:"messages,omitempty"`
	// Header is the message header, for show.
	Header string `json:"header,omitempty"`
	// Affected counts the messages a command changed.
	Affected int `json:"affected"`
}

// Scheduler is what a running server lets commands poke.
type Scheduler interface {
	Notify(id string)
	RetryAll()
}

// Handler carries out requests on a queue.
type Handler struct {
	Queue queue.Queue
	Sched Scheduler // nil when the server is stopped
}

// Handle carries out one request.
func (h *Handler) Handle(ctx context.Context, req Request) Response {
	var r Response
	err := h.handle(ctx, req, &r)
	if err != nil {
		r.Error = err.Error()
	}
	return r
}

func (h *Handler) handle(ctx context.Context, req Request, r *Response) error {
	needID := func() error {
		if req.ID == "" {
			return fmt.Errorf("%s needs a message ID", req.Op)
		}
		return nil
	}
	switch req.Op {
	case OpList:
		return h.Queue.Scan(ctx, func(m *queue.Message) bool {
			r.Messages = append(r.Messages, m)
			return true
		})
	case OpShow:
		if err := needID(); err != nil {
			return err
		}
		m, err := h.Queue.Get(ctx, req.ID)
		if err != nil {
			return err
		}
		r.Messages = []*queue.Message{m}
		rc, err := h.Queue.Body(ctx, req.ID)
		if err != nil {
			return err
		}
		defer rc.Close()
		r.Header, err = readHeader(rc, 64<<10)
		return err
	case OpRetry:
		if req.ID == "" {
			return h.Queue.Scan(ctx, func(m *queue.Message) bool {
				if h.retry(ctx, m) == nil {
					r.Affected++
				}
				return true
			})
		}
		m, err := h.Queue.Get(ctx, req.ID)
		if err != nil {
			return err
		}
		r.Affected = 1
		return h.retry(ctx, m)
	case OpDelete:
		if err := needID(); err != nil {
			return err
		}
		r.Affected = 1
		return h.Queue.Delete(ctx, req.ID)
	case OpBounce:
		if err := needID(); err != nil {
			return err
		}
		m, err := h.Queue.Get(ctx, req.ID)
		if err != nil {
			return err
		}
		for i := range m.Recipients {
			if rc := &m.Recipients[i]; rc.Status == queue.Pending {
				rc.Status = queue.Failed
				rc.LastReply = "554 5.0.0 Returned to sender by the administrator; last: " + rc.LastReply
			}
		}
		if err := h.Queue.Update(ctx, m); err != nil {
			return err
		}
		r.Affected = 1
		if h.Sched != nil {
			h.Sched.Notify(m.ID) // the scheduler sends the bounce
		}
		return nil
	}
	return fmt.Errorf("unknown op %q", req.Op)
}

// retry makes a message's pending recipients due now.
func (h *Handler) retry(ctx context.Context, m *queue.Message) error {
	for i := range m.Recipients {
		if m.Recipients[i].Status == queue.Pending {
			m.Recipients[i].NextAttempt = time.Time{}
		}
	}
	if err := h.Queue.Update(ctx, m); err != nil {
		return err
	}
	if h.Sched != nil {
		h.Sched.Notify(m.ID)
	}
	return nil
}

// readHeader returns a message's header, up to max bytes.
func readHeader(r io.Reader, max int) (string, error) {
	br := bufio.NewReader(io.LimitReader(r, int64(max)))
	var out []byte
	for {
		line, err := br.ReadSlice('\n')
		if len(line) == 0 || string(line) == "\r\n" || string(line) == "\n" {
			break
		}
		out = append(out, line...)
		if err != nil {
			if err == bufio.ErrBufferFull {
				continue
			}
			break
		}
	}
	return string(out), nil
}

// SocketPath is where a server listens for commands under its data dir.
func SocketPath(dataDir string) string { return filepath.Join(dataDir, "control.sock") }

// QueueDir is the spool directory under a data dir.
func QueueDir(dataDir string) string { return filepath.Join(dataDir, "queue") }

// Serve answers requests on the control socket until ctx is done.
func Serve(ctx context.Context, path string, h *Handler, log *slog.Logger) error {
	os.Remove(path) // a socket left by a crash; the spool lock says we are alone
	l, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	os.Chmod(path, 0o600)
	go func() { <-ctx.Done(); l.Close() }()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			var req Request
			if err := json.NewDecoder(io.LimitReader(c, 1<<16)).Decode(&req); err != nil {
				json.NewEncoder(c).Encode(Response{Error: "bad request: " + err.Error()})
				return
			}
			resp := h.Handle(ctx, req)
			if log != nil {
				log.Info("queue command", "op", req.Op, "id", req.ID, "error", resp.Error)
			}
			json.NewEncoder(c).Encode(resp)
		}()
	}
}

// Do carries out a request for the server whose data dir is dataDir:
// through its socket if it runs, else on the spool itself.
func Do(ctx context.Context, dataDir string, req Request) (Response, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", SocketPath(dataDir))
	if err == nil {
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Minute))
		if err := json.NewEncoder(c).Encode(req); err != nil {
			return Response{}, err
		}
		var resp Response
		if err := json.NewDecoder(c).Decode(&resp); err != nil {
			return Response{}, fmt.Errorf("reading the server's answer: %w", err)
		}
		return resp, nil
	}
	dir := QueueDir(dataDir)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return Response{}, fmt.Errorf("no queue in %s", dataDir)
	}
	q, err := spool.Open(dir, spool.Options{Logger: slog.New(slog.DiscardHandler)})
	if errors.Is(err, spool.ErrLocked) {
		return Response{}, fmt.Errorf("the server holds the queue but its control socket %s does not answer", SocketPath(dataDir))
	}
	if err != nil {
		return Response{}, err
	}
	defer q.Close()
	h := &Handler{Queue: q}
	return h.Handle(ctx, req), nil
}

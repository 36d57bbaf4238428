package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/smtpkit/smtpkit/internal/queuectl"
	"github.com/smtpkit/smtpkit/queue"
)

const queueUsage = `usage: smtpkit queue [--data DIR] [--json] <command>

commands:
  list           every queued message
  show ID        one message: envelope, recipients' states, header
  retry [ID]     try a message (or every message) again now
  delete ID      remove a message without notice
  bounce ID      give up on a message's pending recipients and bounce them

It works whether the server is running (through DIR/control.sock) or not.
`

func queueCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("queue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, queueUsage) }
	data := fs.String("data", "smtpkit-data", "data `directory` of the server")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	rest := fs.Args()
	if len(rest) == 0 || len(rest) > 2 {
		fs.Usage()
		return 2
	}
	req := queuectl.Request{Op: rest[0]}
	if len(rest) == 2 {
		req.ID = rest[1]
	}
	switch req.Op {
	case queuectl.OpList:
		if req.ID != "" {
			fs.Usage()
			return 2
		}
	case queuectl.OpShow, queuectl.OpDelete, queuectl.OpBounce:
		if req.ID == "" {
			fmt.Fprintf(stderr, "smtpkit queue %s: needs a message ID\n", req.Op)
			return 2
		}
	case queuectl.OpRetry:
	default:
		fmt.Fprintf(stderr, "smtpkit queue: unknown command %q\n\n", req.Op)
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	resp, err := queuectl.Do(ctx, *data, req)
	if err != nil {
		fmt.Fprintln(stderr, "smtpkit queue:", err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(resp)
		if resp.Error != "" {
			return 1
		}
		return 0
	}
	if resp.Error != "" {
		fmt.Fprintln(stderr, "smtpkit queue:", resp.Error)
		return 1
	}
	switch req.Op {
	case queuectl.OpList:
		printList(stdout, resp.Messages)
	case queuectl.OpShow:
		printShow(stdout, resp.Messages[0], resp.Header)
	default:
		fmt.Fprintf(stdout, "%s: %d message(s)\n", req.Op, resp.Affected)
	}
	return 0
}

func printList(w io.Writer, msgs []*queue.Message) {
	if len(msgs) == 0 {
		fmt.Fprintln(w, "queue is empty")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSIZE\tARRIVED\tFROM\tPENDING\tNEXT ATTEMPT\tLAST REPLY")
	for _, m := range msgs {
		pending, next, last := 0, time.Time{}, ""
		for _, r := range m.Recipients {
			if r.Status != queue.Pending {
				continue
			}
			pending++
			if next.IsZero() || r.NextAttempt.Before(next) {
				next = r.NextAttempt
			}
			if r.LastReply != "" {
				last = r.LastReply
			}
		}
		from := m.From.String()
		if from == "" {
			from = "<>"
		}
		nextS := "now"
		if !next.IsZero() && next.After(time.Now()) {
			nextS = next.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d/%d\t%s\t%s\n", m.ID, m.Size, m.Received.Local().Format(time.DateTime), from,
			pending, len(m.Recipients), nextS, truncate(last, 60))
	}
	tw.Flush()
	fmt.Fprintf(w, "%d message(s)\n", len(msgs))
}

func printShow(w io.Writer, m *queue.Message, header string) {
	from := m.From.String()
	if from == "" {
		from = "<>"
	}
	fmt.Fprintf(w, "id:       %s\nfrom:     %s\nsize:     %d\narrived:  %s\nclient:   %s\n", m.ID, from, m.Size, m.Received.Local().Format(time.RFC3339), m.Client)
	if m.MailOptions.EnvelopeID != "" || m.MailOptions.Return != "" {
		fmt.Fprintf(w, "dsn:      envid=%q ret=%s\n", m.MailOptions.EnvelopeID, m.MailOptions.Return)
	}
	fmt.Fprintln(w, "recipients:")
	for _, r := range m.Recipients {
		fmt.Fprintf(w, "  %s  %s  attempts=%d", r.Address.String(), r.Status, r.Attempts)
		if r.Status == queue.Pending && !r.NextAttempt.IsZero() {
			fmt.Fprintf(w, "  next=%s", r.NextAttempt.Local().Format(time.DateTime))
		}
		if r.LastReply != "" {
			fmt.Fprintf(w, "\n      last: %s", r.LastReply)
			if r.RemoteMTA != "" {
				fmt.Fprintf(w, " (from %s)", r.RemoteMTA)
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "header:")
	for _, l := range strings.SplitAfter(strings.TrimRight(header, "\r\n"), "\n") {
		fmt.Fprintf(w, "  %s\n", strings.TrimRight(l, "\r\n"))
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

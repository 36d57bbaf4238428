// Package queue defines the mail queue: where a message waits, durably,
// between the 250 that accepted it and its delivery or bounce.
//
// The interface is small on purpose so that the embedded on-disk spool
// (package queue/spool) and a distributed backend can sit behind it
// without the SMTP or delivery code knowing which one is there.
package queue

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/smtpkit/smtpkit/smtp"
)

// Status is where one recipient of a message stands.
type Status uint8

const (
	// Pending: not yet delivered; try at NextAttempt (zero: now).
	Pending Status = iota
	// Delivered: a server accepted it; nothing more to do.
	Delivered
	// Failed: permanently refused or expired; a bounce is due (or sent).
	Failed
)

func (s Status) String() string {
	switch s {
	case Pending:
		return "pending"
	case Delivered:
		return "delivered"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Recipient is one recipient and its delivery state.
type Recipient struct {
	Address smtp.Address     `json:"address"`
	Options smtp.RcptOptions `json:"options,omitzero"`
	Status  Status           `json:"status"`
	// Attempts counts delivery attempts so far.
	Attempts int `json:"attempts,omitempty"`
	// NextAttempt is when a Pending recipient is next due.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// LastReply is the last reply or error of an attempt, for logs,
	// `smtpkit queue show` and the bounce.
	LastReply string `json:"last_reply,omitempty"`
	// RemoteMTA is the host that gave LastReply, if any.
	RemoteMTA string `json:"remote_mta,omitempty"`
	// Notified records that this recipient's failure was dealt with: the
	// sender was sent a bounce, or wanted none. A Failed recipient not yet
	// Notified keeps the message queued until it is.
	Notified bool `json:"notified,omitempty"`
}

// Envelope is a message's envelope and trace of its reception.
type Envelope struct {
	From        smtp.Address     `json:"from"`
	MailOptions smtp.MailOptions `json:"mail_options,omitzero"`
	Recipients  []Recipient      `json:"recipients"`
	// Received is when the message was accepted.
	Received time.Time `json:"received"`
	// Client describes who sent it ("helo [ip]"), for bounces and logs.
	Client string `json:"client,omitempty"`
}

// Message is a queued message: its envelope, recipients' states and size.
// The body is read with Queue.Body.
type Message struct {
	ID string `json:"id"`
	Envelope
	Size int64 `json:"size"`
	// DelayNotified records that a "delayed" notice went to the sender.
	DelayNotified bool `json:"delay_notified,omitempty"`
}

// Done reports whether nothing is left to do: every recipient delivered,
// or failed with its sender told (or not wanting to be).
func (m *Message) Done() bool {
	for _, r := range m.Recipients {
		if r.Status == Pending || r.Status == Failed && !r.Notified {
			return false
		}
	}
	return true
}

// Clone returns a deep copy, so callers can change recipients' states
// without racing with the queue's copy.
func (m *Message) Clone() *Message {
	c := *m
	c.Recipients = append([]Recipient(nil), m.Recipients...)
	return &c
}

// ErrNotFound is returned for an unknown message ID.
var ErrNotFound = errors.New("queue: no such message")

// Queue stores messages until they are delivered or bounced.
//
// Put is the durability point: when it returns nil, the message and its
// envelope survive a crash of the process or the machine, and only then
// may the server answer 250. Delivery is at least once: a message whose
// delivery succeeded but whose Update did not reach the disk before a
// crash is sent again after restart.
type Queue interface {
	// Put stores a new message and returns its ID.
	Put(ctx context.Context, env *Envelope, body io.Reader) (id string, err error)
	// Get returns a copy of a message's current state.
	Get(ctx context.Context, id string) (*Message, error)
	// Body opens a message's body for reading.
	Body(ctx context.Context, id string) (io.ReadCloser, error)
	// Update durably records new states for a message's recipients (m as
	// returned by Get or Scan, changed). A message whose recipients are all
	// final is removed.
	Update(ctx context.Context, m *Message) error
	// Delete removes a message whatever its state.
	Delete(ctx context.Context, id string) error
	// Scan calls fn for a copy of every queued message, in no set order,
	// until fn returns false.
	Scan(ctx context.Context, fn func(*Message) bool) error
	// Close releases the queue's resources.
	Close() error
}

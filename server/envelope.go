package server

import (
	"context"
	"io"

	"github.com/smtpkit/smtpkit/smtp"
)

// Envelope is one message with its envelope, as the simple path hands it
// over: who sent it, to whom, and the body as it streams in.
type Envelope struct {
	Conn        *Conn
	From        smtp.Address
	MailOptions smtp.MailOptions
	To          []Recipient
	// Data streams the body. It is valid only during the call.
	Data io.Reader
}

// Recipient is one accepted RCPT with its parameters.
type Recipient struct {
	Address smtp.Address
	Options smtp.RcptOptions
}

// Addresses returns the recipients' addresses.
func (e *Envelope) Addresses() []smtp.Address {
	out := make([]smtp.Address, len(e.To))
	for i, r := range e.To {
		out[i] = r.Address
	}
	return out
}

// Bytes reads the whole body into memory. It is bounded by the server's
// MaxMessageBytes; prefer streaming Data for large messages.
func (e *Envelope) Bytes() ([]byte, error) { return io.ReadAll(e.Data) }

// Received returns the trace header for this message.
func (e *Envelope) Received() smtp.Received {
	return e.Conn.Received(&e.MailOptions, e.Addresses())
}

// EnvelopeFunc is the simple path of the original Net::SMTP::Server: a
// function that gets each finished envelope. It accepts every sender and
// recipient; its error, if any, is the reply to the message.
type EnvelopeFunc func(ctx context.Context, e *Envelope) error

// NewSession implements Handler.
func (f EnvelopeFunc) NewSession(ctx context.Context, c *Conn) (Session, error) {
	return &envelopeSession{fn: f, env: Envelope{Conn: c}}, nil
}

type envelopeSession struct {
	fn  EnvelopeFunc
	env Envelope
}

func (s *envelopeSession) Mail(_ context.Context, from smtp.Address, opts *smtp.MailOptions) error {
	s.env.From, s.env.MailOptions = from, *opts
	return nil
}

func (s *envelopeSession) Rcpt(_ context.Context, to smtp.Address, opts *smtp.RcptOptions) error {
	s.env.To = append(s.env.To, Recipient{Address: to, Options: *opts})
	return nil
}

func (s *envelopeSession) Data(ctx context.Context, r io.Reader) error {
	e := s.env
	e.Data = r
	return s.fn(ctx, &e)
}

func (s *envelopeSession) Reset(context.Context) {
	s.env = Envelope{Conn: s.env.Conn}
}

func (s *envelopeSession) Close(context.Context, error) {}

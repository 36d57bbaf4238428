// Package client is the outbound side of SMTP and LMTP: it speaks to one
// server over one connection, with the same wire engine as the server, and
// reports a result per recipient.
//
// It pipelines the envelope when the server offers PIPELINING (RFC 2920),
// passes on SIZE, BODY, SMTPUTF8 and DSN parameters where they are
// advertised, and keeps the connection open for further messages.
package client

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"

	"github.com/smtpkit/smtpkit/smtp"
	"github.com/smtpkit/smtpkit/smtp/wire"
)

// Timeouts from RFC 5321 4.5.3.2, used where Options leaves them zero.
const (
	DefaultCommandTimeout   = 5 * time.Minute  // greeting, MAIL, RCPT, and others
	DefaultDataInitTimeout  = 2 * time.Minute  // the 354 reply
	DefaultDataBlockTimeout = 3 * time.Minute  // each write of the body
	DefaultDataTermTimeout  = 10 * time.Minute // the reply after the final dot
	maxReplyLine            = 4096
)

// Options configures a Client. The zero value is usable.
type Options struct {
	// LocalName is the name sent in EHLO/LHLO; "" means "localhost".
	LocalName string
	// LMTP speaks LMTP (LHLO, a reply per recipient after the body).
	LMTP bool
	// CommandTimeout, DataTimeout and FinalTimeout override the RFC 5321
	// defaults for replies to commands, each body write, and the reply
	// after the body.
	CommandTimeout time.Duration
	DataTimeout    time.Duration
	FinalTimeout   time.Duration
}

// Client is a connection to one SMTP or LMTP server. It is not safe for
// concurrent use.
type Client struct {
	conn     net.Conn
	br       *wire.Reader
	bw       *bufio.Writer
	opts     Options
	ext      map[string]string
	greeting wire.Reply
	isTLS    bool
	esmtp    bool
	helloed  bool
}

// Recipient is one RCPT with its DSN parameters.
type Recipient struct {
	Address smtp.Address
	Options smtp.RcptOptions
}

// Result is the outcome of one message. Rcpt holds, per recipient in order,
// nil if the server accepted it, or the reply that refused it. For SMTP,
// the final reply applies to every recipient RCPT accepted; for LMTP each
// has its own.
type Result struct {
	Rcpt []error
	// Reply is the server's final reply to the body (the last one for LMTP).
	Reply wire.Reply
}

// Delivered reports how many recipients were accepted.
func (r *Result) Delivered() int {
	n := 0
	for _, e := range r.Rcpt {
		if e == nil {
			n++
		}
	}
	return n
}

// Dial connects to addr and reads the greeting.
func Dial(ctx context.Context, addr string, opts Options) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := New(ctx, conn, opts)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// New runs a client over an established connection (a *tls.Conn for
// implicit TLS) and reads the greeting.
func New(ctx context.Context, conn net.Conn, opts Options) (*Client, error) {
	c := &Client{conn: conn, opts: opts}
	c.br = wire.NewReader(conn, wire.CommandBufferSize)
	c.bw = bufio.NewWriterSize(conn, 4096)
	c.br.BeforeFill = c.bw.Flush
	_, c.isTLS = conn.(*tls.Conn)
	var r wire.Reply
	err := c.step(ctx, c.cmdTimeout(), func() (err error) { r, err = c.br.ReadReply(maxReplyLine); return })
	if err != nil {
		return nil, err
	}
	c.greeting = r
	if r.Code != 220 {
		return nil, replyError(r, "greeting")
	}
	return c, nil
}

func (c *Client) cmdTimeout() time.Duration {
	if c.opts.CommandTimeout > 0 {
		return c.opts.CommandTimeout
	}
	return DefaultCommandTimeout
}

// step runs f with a deadline from timeout and ctx; cancelling ctx
// interrupts the I/O in progress.
func (c *Client) step(ctx context.Context, timeout time.Duration, f func() error) error {
	dl := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	c.conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { c.conn.SetDeadline(time.Unix(1, 0)) })
	err := f()
	if !stop() && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// replyError wraps a reply that was not the one wanted.
func replyError(r wire.Reply, what string) error {
	if e := r.Err(); e != nil {
		return e
	}
	return &smtp.Error{Code: r.Code, EnhancedCode: r.EnhancedCode, Message: r.Text(), Err: fmt.Errorf("unexpected reply to %s", what)}
}

func (c *Client) cmd(ctx context.Context, timeout time.Duration, line string) (wire.Reply, error) {
	var r wire.Reply
	err := c.step(ctx, timeout, func() error {
		c.bw.WriteString(line)
		c.bw.WriteString("\r\n")
		var err error
		r, err = c.br.ReadReply(maxReplyLine)
		return err
	})
	return r, err
}

// Hello sends EHLO (LHLO for LMTP), falling back to HELO when the server
// does not know EHLO.
func (c *Client) Hello(ctx context.Context) error {
	name := c.opts.LocalName
	if name == "" {
		name = "localhost"
	}
	verb := "EHLO"
	if c.opts.LMTP {
		verb = "LHLO"
	}
	r, err := c.cmd(ctx, c.cmdTimeout(), verb+" "+name)
	if err != nil {
		return err
	}
	if r.Code == 250 {
		c.esmtp, c.helloed = true, true
		c.ext = map[string]string{}
		for _, l := range r.Lines[1:] {
			k, v, _ := strings.Cut(l, " ")
			c.ext[strings.ToUpper(k)] = v
		}
		return nil
	}
	if c.opts.LMTP || r.Code != 500 && r.Code != 502 && r.Code != 504 && r.Code != 550 {
		return replyError(r, verb)
	}
	r, err = c.cmd(ctx, c.cmdTimeout(), "HELO "+name)
	if err != nil {
		return err
	}
	if r.Code != 250 {
		return replyError(r, "HELO")
	}
	c.esmtp, c.helloed, c.ext = false, true, map[string]string{}
	return nil
}

// Extension reports whether the server advertised ext, and its parameters.
func (c *Client) Extension(ext string) (bool, string) {
	v, ok := c.ext[strings.ToUpper(ext)]
	return ok, v
}

// TLS reports whether the connection is encrypted.
func (c *Client) TLS() bool { return c.isTLS }

// ConnectionState returns the TLS state, or false on plaintext.
func (c *Client) ConnectionState() (tls.ConnectionState, bool) {
	tc, ok := c.conn.(*tls.Conn)
	if !ok {
		return tls.ConnectionState{}, false
	}
	return tc.ConnectionState(), true
}

// StartTLS upgrades the connection (RFC 3207) and says EHLO again, since
// the server forgets everything it learnt before the handshake.
func (c *Client) StartTLS(ctx context.Context, cfg *tls.Config) error {
	if !c.helloed {
		if err := c.Hello(ctx); err != nil {
			return err
		}
	}
	r, err := c.cmd(ctx, c.cmdTimeout(), "STARTTLS")
	if err != nil {
		return err
	}
	if r.Code != 220 {
		return replyError(r, "STARTTLS")
	}
	// Anything the server sent after its 220 arrived in the clear and
	// cannot be trusted (the client side of CVE-2011-0411).
	if c.br.Buffered() > 0 {
		return errors.New("client: server sent data after STARTTLS reply")
	}
	tc := tls.Client(c.conn, cfg)
	if err := c.step(ctx, c.cmdTimeout(), func() error { return tc.HandshakeContext(ctx) }); err != nil {
		return err
	}
	c.conn, c.isTLS = tc, true
	c.br.Reset(tc)
	c.bw.Reset(tc)
	c.helloed = false
	return c.Hello(ctx)
}

// Auth authenticates with a SASL mechanism (RFC 4954).
func (c *Client) Auth(ctx context.Context, a sasl.Client) error {
	mech, ir, err := a.Start()
	if err != nil {
		return err
	}
	line := "AUTH " + mech
	if ir != nil {
		enc := base64.StdEncoding.EncodeToString(ir)
		if enc == "" {
			enc = "="
		}
		line += " " + enc
	}
	r, err := c.cmd(ctx, c.cmdTimeout(), line)
	for err == nil && r.Code == 334 {
		var chal []byte
		chal, err = base64.StdEncoding.DecodeString(r.Text())
		if err != nil {
			c.cmd(ctx, c.cmdTimeout(), "*")
			return fmt.Errorf("client: bad AUTH challenge: %w", err)
		}
		var resp []byte
		resp, err = a.Next(chal)
		if err != nil {
			c.cmd(ctx, c.cmdTimeout(), "*")
			return err
		}
		r, err = c.cmd(ctx, c.cmdTimeout(), base64.StdEncoding.EncodeToString(resp))
	}
	if err != nil {
		return err
	}
	if r.Code != 235 {
		return replyError(r, "AUTH")
	}
	return nil
}

// mailLine builds MAIL FROM with the parameters the server advertised.
func (c *Client) mailLine(from smtp.Address, o *smtp.MailOptions, size int64) (string, error) {
	var b strings.Builder
	b.WriteString("MAIL FROM:")
	b.WriteString(from.Path())
	if ok, _ := c.Extension("SIZE"); ok && size > 0 {
		b.WriteString(" SIZE=" + strconv.FormatInt(size, 10))
	}
	if o == nil {
		return b.String(), nil
	}
	if o.Body != "" && o.Body != smtp.Body7Bit {
		if ok, _ := c.Extension("8BITMIME"); ok && o.Body == smtp.Body8BitMIME {
			b.WriteString(" BODY=8BITMIME")
		} else if ok, _ := c.Extension("BINARYMIME"); ok && o.Body == smtp.BodyBinaryMIME {
			b.WriteString(" BODY=BINARYMIME")
		} else if o.Body == smtp.BodyBinaryMIME {
			return "", smtp.NewError(554, smtp.EnhancedCode{5, 6, 3}, "Binary message cannot be sent: server lacks BINARYMIME")
		}
		// 8-bit data to a server without 8BITMIME is sent as it is, as
		// most MTAs do, rather than bounced (RFC 6152 leaves this open).
	}
	if o.UTF8 {
		if ok, _ := c.Extension("SMTPUTF8"); !ok {
			return "", smtp.NewError(553, smtp.EnhancedCode{5, 6, 7}, "Server does not support SMTPUTF8")
		}
		b.WriteString(" SMTPUTF8")
	}
	if ok, _ := c.Extension("DSN"); ok {
		if o.Return != "" {
			b.WriteString(" RET=" + string(o.Return))
		}
		if o.EnvelopeID != "" {
			b.WriteString(" ENVID=" + smtp.EncodeXtext(o.EnvelopeID))
		}
	}
	return b.String(), nil
}

func (c *Client) rcptLine(r Recipient) string {
	line := "RCPT TO:" + r.Address.Path()
	if ok, _ := c.Extension("DSN"); ok {
		if len(r.Options.Notify) > 0 {
			var n []string
			for _, v := range r.Options.Notify {
				n = append(n, string(v))
			}
			line += " NOTIFY=" + strings.Join(n, ",")
		}
		if r.Options.OriginalRecipient != "" {
			typ := r.Options.OriginalRecipientType
			if typ == "" {
				typ = "rfc822"
			}
			line += " ORCPT=" + typ + ";" + smtp.EncodeXtext(r.Options.OriginalRecipient)
		}
	}
	return line
}

// Send delivers one message: MAIL, a RCPT per recipient, and the body.
// size is the body's size if known (for SIZE), else 0. A refused sender or
// body fails every recipient with that reply; refused recipients fail
// alone. The error is non-nil only when the connection failed, after which
// the Client must be closed.
func (c *Client) Send(ctx context.Context, from smtp.Address, opts *smtp.MailOptions, rcpts []Recipient, body io.Reader, size int64) (*Result, error) {
	if !c.helloed {
		if err := c.Hello(ctx); err != nil {
			return nil, err
		}
	}
	res := &Result{Rcpt: make([]error, len(rcpts))}
	failAll := func(err error) {
		for i := range res.Rcpt {
			if res.Rcpt[i] == nil {
				res.Rcpt[i] = err
			}
		}
	}
	mail, err := c.mailLine(from, opts, size)
	if err != nil {
		failAll(err)
		return res, nil
	}
	pipelining, _ := c.Extension("PIPELINING")

	// RFC 2920 3.1: MAIL, RCPT and DATA may go in one batch; DATA is last.
	var mailReply wire.Reply
	accepted := 0
	var dataReply wire.Reply
	err = c.step(ctx, c.cmdTimeout(), func() error {
		if pipelining {
			c.bw.WriteString(mail + "\r\n")
			for _, r := range rcpts {
				c.bw.WriteString(c.rcptLine(r) + "\r\n")
			}
			c.bw.WriteString("DATA\r\n")
		} else {
			c.bw.WriteString(mail + "\r\n")
		}
		var err error
		if mailReply, err = c.br.ReadReply(maxReplyLine); err != nil {
			return err
		}
		for i, r := range rcpts {
			if !pipelining {
				if mailReply.Code != 250 {
					break
				}
				c.bw.WriteString(c.rcptLine(r) + "\r\n")
			}
			rr, err := c.br.ReadReply(maxReplyLine)
			if err != nil {
				return err
			}
			if rr.Code != 250 && rr.Code != 251 {
				res.Rcpt[i] = replyError(rr, "RCPT")
			} else {
				accepted++
			}
		}
		if pipelining {
			dataReply, err = c.br.ReadReply(maxReplyLine)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if mailReply.Code != 250 {
		// The sender's refusal is every recipient's, whatever the
		// pipelined RCPTs got (503, typically).
		e := replyError(mailReply, "MAIL")
		for i := range res.Rcpt {
			res.Rcpt[i] = e
		}
		if !pipelining {
			return res, nil
		}
		if dataReply.Code == 354 { // should not happen: end the empty body
			return res, c.endEmptyData(ctx)
		}
		return res, nil
	}
	if accepted == 0 {
		if pipelining && dataReply.Code == 354 {
			return res, c.endEmptyData(ctx)
		}
		if !pipelining {
			_, err := c.cmd(ctx, c.cmdTimeout(), "RSET")
			return res, err
		}
		return res, nil
	}
	if !pipelining {
		dataReply, err = c.cmd(ctx, c.dataInitTimeout(), "DATA")
		if err != nil {
			return nil, err
		}
	}
	if dataReply.Code != 354 {
		failAll(replyError(dataReply, "DATA"))
		return res, nil
	}
	// Stream the body.
	dataTimeout := c.opts.DataTimeout
	if dataTimeout <= 0 {
		dataTimeout = DefaultDataBlockTimeout
	}
	err = c.step(ctx, dataTimeout, func() error {
		dw := wire.NewDotWriter(&deadlineWriter{w: c.bw, conn: c.conn, timeout: dataTimeout})
		if _, err := io.Copy(dw, body); err != nil {
			return err
		}
		return dw.Close()
	})
	if err != nil {
		return nil, err
	}
	final := c.opts.FinalTimeout
	if final <= 0 {
		final = DefaultDataTermTimeout
	}
	err = c.step(ctx, final, func() error {
		if err := c.bw.Flush(); err != nil {
			return err
		}
		if !c.opts.LMTP {
			r, err := c.br.ReadReply(maxReplyLine)
			res.Reply = r
			if err == nil && r.Code != 250 {
				failAll(replyError(r, "end of data"))
			}
			return err
		}
		// RFC 2033 4.2: one reply per accepted recipient, in order.
		for i := range rcpts {
			if res.Rcpt[i] != nil {
				continue
			}
			r, err := c.br.ReadReply(maxReplyLine)
			if err != nil {
				return err
			}
			res.Reply = r
			if r.Code != 250 {
				res.Rcpt[i] = replyError(r, "end of data")
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (c *Client) dataInitTimeout() time.Duration {
	if c.opts.CommandTimeout > 0 {
		return c.opts.CommandTimeout
	}
	return DefaultDataInitTimeout
}

// endEmptyData closes a DATA the server opened although nothing was
// accepted, then resets.
func (c *Client) endEmptyData(ctx context.Context) error {
	_, err := c.cmd(ctx, c.cmdTimeout(), ".")
	if err != nil {
		return err
	}
	_, err = c.cmd(ctx, c.cmdTimeout(), "RSET")
	return err
}

// deadlineWriter pushes the write deadline forward before each write, so
// the data timeout bounds each block rather than the whole body.
type deadlineWriter struct {
	w       io.Writer
	conn    net.Conn
	timeout time.Duration
	last    time.Time
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if now := time.Now(); now.Sub(d.last) > time.Second {
		d.conn.SetWriteDeadline(now.Add(d.timeout))
		d.last = now
	}
	return d.w.Write(p)
}

// Reset sends RSET.
func (c *Client) Reset(ctx context.Context) error {
	r, err := c.cmd(ctx, c.cmdTimeout(), "RSET")
	if err != nil {
		return err
	}
	if r.Code != 250 {
		return replyError(r, "RSET")
	}
	return nil
}

// Noop sends NOOP, to check that a cached connection is still alive.
func (c *Client) Noop(ctx context.Context) error {
	r, err := c.cmd(ctx, c.cmdTimeout(), "NOOP")
	if err != nil {
		return err
	}
	if r.Code != 250 {
		return replyError(r, "NOOP")
	}
	return nil
}

// Quit sends QUIT and closes the connection.
func (c *Client) Quit(ctx context.Context) error {
	_, err := c.cmd(ctx, c.cmdTimeout(), "QUIT")
	c.conn.Close()
	return err
}

// Close closes the connection without QUIT.
func (c *Client) Close() error { return c.conn.Close() }

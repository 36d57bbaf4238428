// Relay is the loop of the original Net::SMTP::Server: accept every message
// and forward it, envelope unchanged, to a smarthost. It shows the simple
// path, a server.EnvelopeFunc, and how the smarthost's answer becomes the
// reply: a permanent refusal is passed on as a 554, anything else (the
// smarthost down, a 4xx) as a 451 so that the client tries again later.
//
// Every recipient is accepted at RCPT and the smarthost decides at the end
// of DATA, for all of them at once, as the Perl original did.
//
// Try it, with a smarthost listening on 127.0.0.1:2526:
//
//	go run ./examples/relay -listen 127.0.0.1:2525 -smarthost 127.0.0.1:2526
//	swaks --server 127.0.0.1:2525 --from alice@example.org --to bob@example.com
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	netsmtp "net/smtp"
	"net/textproto"
	"os"
	"time"

	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2525", "address to accept mail on")
	smarthost := flag.String("smarthost", "", "host:port to forward every message to (required)")
	flag.Parse()
	if *smarthost == "" {
		flag.Usage()
		os.Exit(2)
	}
	hostname, err := os.Hostname()
	if err != nil {
		hostname = "localhost"
	}
	srv := &server.Server{Addr: *listen, Hostname: hostname, Handler: relay(*smarthost, hostname, os.Stdout)}
	log.Printf("relaying from %s to %s", *listen, *smarthost)
	log.Fatal(srv.ListenAndServe())
}

// relay returns the handler that forwards each message to smarthost,
// saying EHLO with hostname, and prints each envelope to w.
func relay(smarthost, hostname string, w io.Writer) server.EnvelopeFunc {
	return func(ctx context.Context, e *server.Envelope) error {
		fmt.Fprintf(w, "from=%s to=%v client=%s\n", e.From.Path(), e.Addresses(), e.Conn.RemoteIP())
		return forward(ctx, smarthost, hostname, e)
	}
}

// forwardTimeout bounds a whole forwarding: net/smtp takes no context.
const forwardTimeout = 5 * time.Minute

// forward sends one envelope to smarthost with the standard library's
// client, streaming the body through.
func forward(ctx context.Context, smarthost, hostname string, e *server.Envelope) error {
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", smarthost)
	if err != nil {
		return err // untyped: 451, the client retries
	}
	conn.SetDeadline(time.Now().Add(forwardTimeout))
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // the session ended: give up
	defer stop()
	host, _, _ := net.SplitHostPort(smarthost)
	c, err := netsmtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return refusal(err)
	}
	defer c.Close()
	if err := c.Hello(hostname); err != nil {
		return refusal(err)
	}
	if err := c.Mail(e.From.String()); err != nil {
		return refusal(err)
	}
	for _, to := range e.To {
		if err := c.Rcpt(to.Address.String()); err != nil {
			return refusal(err)
		}
	}
	wc, err := c.Data()
	if err != nil {
		return refusal(err)
	}
	// RFC 5321 4.4: each relay adds its trace header.
	if _, err := io.WriteString(wc, e.Received().String()); err != nil {
		return err
	}
	if _, err := io.Copy(wc, e.Data); err != nil {
		// Close the connection without the final dot: a body cut short by
		// a limit or a broken client must not reach the smarthost as a
		// whole message.
		conn.Close()
		return err
	}
	if err := wc.Close(); err != nil {
		return refusal(err)
	}
	c.Quit()
	return nil
}

// refusal turns the smarthost's reply into ours. A permanent refusal stays
// permanent, so that the sender gets a bounce and not endless retries; the
// client sees a short text, the log gets the smarthost's own words.
func refusal(err error) error {
	var te *textproto.Error
	if errors.As(err, &te) && te.Code >= 500 {
		return smtp.Wrap(554, smtp.EnhancedCode{5, 0, 0}, "Refused by the next hop", err)
	}
	return err
}

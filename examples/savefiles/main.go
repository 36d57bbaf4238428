// Savefiles saves every message it receives into a Maildir, durably: the
// client hears 250 only once the file and its directory entry are on disk
// (written to tmp/, fsynced, renamed into new/, new/ fsynced). A message
// that breaks a limit or fails to save leaves nothing behind, and the
// client is told to try again (451) or that the message was refused.
//
// Try it:
//
//	go run ./examples/savefiles -listen 127.0.0.1:2525 -dir /tmp/mail
//	swaks --server 127.0.0.1:2525 --from alice@example.org --to bob@example.com
//	ls /tmp/mail/new
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"

	"github.com/smtpkit/smtpkit/maildir"
	"github.com/smtpkit/smtpkit/server"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2525", "address to accept mail on")
	dir := flag.String("dir", "mail", "Maildir to save messages in (created if missing)")
	flag.Parse()
	md, err := maildir.Open(*dir, maildir.Options{})
	if err != nil {
		log.Fatal(err)
	}
	srv := &server.Server{Addr: *listen, Handler: saver(md, os.Stdout)}
	log.Printf("saving mail received on %s into %s", *listen, md.Path())
	log.Fatal(srv.ListenAndServe())
}

// saver returns the handler that streams each message, behind its
// Received header, into md, and prints where it went to w.
func saver(md *maildir.Dir, w io.Writer) server.EnvelopeFunc {
	return func(ctx context.Context, e *server.Envelope) error {
		name, err := md.Deliver(ctx, []byte(e.Received().String()), e.Data)
		if err != nil {
			// Untyped, so 451: the sender keeps the message and retries.
			// (A body that broke a limit gets the server's own 552 or 554.)
			return err
		}
		fmt.Fprintf(w, "saved new/%s from=%s to=%v\n", name, e.From.Path(), e.Addresses())
		return nil
	}
}

// Command gosmtp is the baseline for smtpkit's benchmarks: a minimal server
// on github.com/emersion/go-smtp that does the same work as "smtpkit serve"
// (drop the body, or store it with maildir.Deliver and fsync) so that a
// side-by-side run compares the protocol engines and nothing else.
//
// It is a separate module so that the main module never depends on go-smtp.
//
//	gosmtp --listen 127.0.0.1:2526 --discard
//	gosmtp --listen 127.0.0.1:2526 --data DIR   # into DIR/maildir, fsynced
//
// On SIGINT or SIGTERM it closes the listener and prints one line,
// "gosmtp: messages=N bytes=B", so that a benchmark can check that every
// message it sent arrived.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/smtpkit/smtpkit/maildir"
	"github.com/smtpkit/smtpkit/smtp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2526", "`address` to listen on")
	discard := flag.Bool("discard", false, "accept and drop every message")
	data := flag.String("data", "gosmtp-data", "data `directory`; mail goes to DIR/maildir")
	maxSize := flag.Int64("max-size", 10_240_000, "maximum message size in `bytes` (smtpkit's default)")
	hostname := flag.String("hostname", "", "host `name` for the greeting and trace headers (default: the system's)")
	cpuProf := flag.String("cpuprofile", "", "write a CPU profile to `file` (for comparing profiles with smtpkit's)")
	flag.Parse()

	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}

	host := *hostname
	if host == "" {
		host, _ = os.Hostname()
		if host == "" {
			host = "localhost"
		}
	}
	be := &backend{host: host, discard: *discard}
	if !*discard {
		md, err := maildir.Open(filepath.Join(*data, "maildir"), maildir.Options{Hostname: host})
		if err != nil {
			log.Fatal(err)
		}
		be.md = md
	}

	s := gosmtp.NewServer(be)
	s.Domain = host
	// The same limits as smtpkit's defaults, so neither side skips work.
	s.MaxMessageBytes = *maxSize
	s.MaxRecipients = 1000
	s.MaxLineLength = 2048
	s.ReadTimeout = 5 * time.Minute
	s.WriteTimeout = 5 * time.Minute
	s.EnableSMTPUTF8 = true
	s.EnableDSN = true
	s.EnableBINARYMIME = true
	// go-smtp has no connection limits, so there is nothing to lift.

	l, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(l) }()
	select {
	case <-ctx.Done():
		s.Close()
	case err := <-errc:
		if err != nil && !errors.Is(err, gosmtp.ErrServerClosed) {
			log.Print(err)
		}
	}
	fmt.Fprintf(os.Stderr, "gosmtp: messages=%d bytes=%d\n", be.msgs.Load(), be.bytes.Load())
}

type backend struct {
	host    string
	discard bool
	md      *maildir.Dir
	seq     atomic.Uint64
	msgs    atomic.Int64
	bytes   atomic.Int64
}

func (b *backend) NewSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	return &session{b: b, c: c, id: strconv.FormatUint(b.seq.Add(1), 36)}, nil
}

type session struct {
	b     *backend
	c     *gosmtp.Conn
	id    string
	rcpts []string
}

func (s *session) Mail(from string, opts *gosmtp.MailOptions) error { return nil }

func (s *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	if s.b.discard {
		n, err := io.Copy(io.Discard, r)
		if err != nil {
			return err
		}
		s.b.msgs.Add(1)
		s.b.bytes.Add(n)
		return nil
	}
	// The same trace header smtpkit's daemon writes, through the same code.
	rec := smtp.Received{Helo: s.c.Hostname(), By: s.b.host, With: "ESMTP", ID: s.id}
	if a, ok := s.c.Conn().RemoteAddr().(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(a.IP)
		rec.RemoteIP = ip.Unmap()
	}
	if len(s.rcpts) == 1 {
		rec.For = s.rcpts[0]
	}
	cr := &countReader{r: r}
	if _, err := s.b.md.Deliver(context.Background(), []byte(rec.String()), cr); err != nil {
		return err
	}
	s.b.msgs.Add(1)
	s.b.bytes.Add(cr.n)
	return nil
}

func (s *session) Reset()        { s.rcpts = s.rcpts[:0] }
func (s *session) Logout() error { return nil }

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

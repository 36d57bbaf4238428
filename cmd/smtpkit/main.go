// Command smtpkit is an SMTP server: "smtpkit serve" receives mail and
// stores it in a Maildir (or discards it, as a load-test sink).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/smtpkit/smtpkit/internal/daemon"
)

const usage = `usage: smtpkit <command> [flags]

commands:
  serve        receive mail (default: 127.0.0.1:2525 into ./smtpkit-data/maildir)
  queue        list, show, retry, delete or bounce queued messages (relay mode)
  hash         read a password on stdin, print its bcrypt hash for --users files

run "smtpkit serve -h" for the serve flags
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "hash":
		return hash(stdin, stdout, stderr)
	case "queue":
		return queueCmd(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "smtpkit: unknown command %q\n\n%s", args[0], usage)
	return 2
}

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg daemon.Config
	var listen, tlsListen, lmtpListen listFlag
	fs.Func("proxy-from", "trusted proxy `address or prefix` (repeatable): connections from it must start with a PROXY v1/v2 header, whose client address then counts; others are refused", func(v string) error {
		p, err := daemon.ParsePrefix(v)
		if err != nil {
			return err
		}
		cfg.ProxyFrom = append(cfg.ProxyFrom, p)
		return nil
	})
	fs.Var(&listen, "listen", "SMTP `address` to listen on (repeatable; default 127.0.0.1:2525)")
	fs.Var(&tlsListen, "tls-listen", "implicit-TLS SMTP `address` (repeatable; needs --tls-cert)")
	fs.Var(&lmtpListen, "lmtp-listen", "LMTP `address` (repeatable)")
	fs.StringVar(&cfg.DataDir, "data", "smtpkit-data", "data `directory`; mail goes to DIR/maildir")
	fs.StringVar(&cfg.Hostname, "hostname", "", "host `name` for the greeting and trace headers (default: the system's)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "certificate `file` (PEM); with --tls-key enables STARTTLS")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "private key `file` (PEM)")
	fs.StringVar(&cfg.UsersFile, "users", "", "`file` of user:bcrypt-hash lines; enables AUTH (over TLS only)")
	fs.Int64Var(&cfg.MaxSize, "max-size", 0, "maximum message size in `bytes` (default 10240000)")
	fs.Int64Var(&cfg.MinFree, "min-free", -1, "free `bytes` the data directory needs for MAIL to be accepted, else 452 4.3.1 (default 1.5 x --max-size; 0: no check)")
	fs.BoolVar(&cfg.Discard, "discard", false, "accept and drop every message (a sink for load tests)")
	fs.BoolVar(&cfg.NoSync, "no-fsync", false, "do not fsync before answering 250 (unsafe: for benchmarks)")
	fs.IntVar(&cfg.MaxConns, "max-conns", 0, "maximum concurrent connections (default 1000, -1 for none)")
	fs.IntVar(&cfg.MaxConnsIP, "max-conns-per-ip", 0, "maximum concurrent connections per client address (default 50, -1 for none)")
	fs.BoolVar(&cfg.InsecureAuth, "insecure-auth", false, "offer AUTH without TLS (unsafe)")
	fs.StringVar(&cfg.Relay.Target, "relay", "", "relay through a durable queue: `mx` (each domain's MX hosts), smtp://user:pass@host:587 or smtps://... (a smarthost)")
	fs.StringVar(&cfg.Relay.DNS, "dns", "", "DNS resolver `host:port` for MX, TLSA and MTA-STS lookups (default: /etc/resolv.conf)")
	fs.IntVar(&cfg.Relay.MXPort, "mx-port", 25, "`port` MX hosts are reached on")
	fs.IntVar(&cfg.Relay.MTASTSPort, "mta-sts-port", 443, "HTTPS `port` MTA-STS policies are fetched from (for tests)")
	fs.StringVar(&cfg.Relay.CAFile, "relay-ca", "", "extra CA `file` (PEM) trusted for smarthosts and MTA-STS hosts")
	fs.DurationVar(&cfg.Relay.MinBackoff, "retry-min", 5*time.Minute, "first retry `delay`; it doubles up to --retry-max")
	fs.DurationVar(&cfg.Relay.MaxBackoff, "retry-max", 4*time.Hour, "longest retry `delay`")
	fs.DurationVar(&cfg.Relay.Lifetime, "queue-lifetime", 5*24*time.Hour, "how `long` a message is retried before it bounces")
	fs.DurationVar(&cfg.Relay.DelayWarning, "delay-warning", 0, "send the sender a delay notice after this `long` (0: never)")
	level := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "smtpkit serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "smtpkit serve: %v\n", err)
		return 2
	}
	cfg.Listen, cfg.TLSListen, cfg.LMTPListen = listen, tlsListen, lmtpListen
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts a graceful stop, which may wait up to 30s
	// for messages in flight; restoring the default disposition then lets
	// a second signal end the process at once.
	context.AfterFunc(ctx, stop)
	if err := daemon.Run(ctx, cfg); err != nil {
		cfg.Logger.Error("serve", "err", err)
		return 1
	}
	return 0
}

func hash(stdin io.Reader, stdout, stderr io.Writer) int {
	b, err := io.ReadAll(io.LimitReader(stdin, 1024))
	if err != nil {
		fmt.Fprintln(stderr, "smtpkit hash:", err)
		return 1
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		fmt.Fprintln(stderr, "smtpkit hash: empty password on stdin")
		return 2
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.DefaultCost)
	if err != nil {
		fmt.Fprintln(stderr, "smtpkit hash:", err)
		return 1
	}
	fmt.Fprintln(stdout, string(h))
	return 0
}

// Command profserve runs the same code as "smtpkit serve" (internal/daemon,
// with the connection limits lifted and per-session logs off) under
// runtime/pprof, so that a benchmark cell can be profiled:
//
//	profserve --listen 127.0.0.1:2525 --discard --cpuprofile cpu.prof --memprofile mem.prof
//
// It writes the profiles when it gets SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/smtpkit/smtpkit/internal/daemon"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2525", "`address` to listen on")
	discard := flag.Bool("discard", false, "accept and drop every message")
	data := flag.String("data", "smtpkit-data", "data `directory` for the Maildir")
	maxSize := flag.Int64("max-size", 0, "maximum message size (0: smtpkit's default)")
	cpuProf := flag.String("cpuprofile", "", "write a CPU profile to `file`")
	memProf := flag.String("memprofile", "", "write an allocation profile to `file` at exit")
	flag.Parse()

	if *memProf != "" {
		runtime.MemProfileRate = 4096
	}
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
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := daemon.Run(ctx, daemon.Config{
		Listen:     []string{*listen},
		DataDir:    *data,
		Hostname:   "bench.example",
		MaxSize:    *maxSize,
		Discard:    *discard,
		MaxConns:   -1,
		MaxConnsIP: -1,
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		log.Print(err)
	}
	if *memProf != "" {
		f, err := os.Create(*memProf)
		if err != nil {
			log.Fatal(err)
		}
		pprof.Lookup("allocs").WriteTo(f, 0)
		f.Close()
	}
}

//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/internal/crashfs"
	"github.com/smtpkit/smtpkit/internal/dnstest"
	"github.com/smtpkit/smtpkit/smtp"
)

// These tests run the daemon with its data directory on crashfs, a FUSE
// file system that keeps what a power cut would leave (file data as of its
// last fsync, directory entries as of their directory's last fsync), and
// cut the power many times while clients send mail: every message the
// daemon had answered 250 before a cut must be in what survives it.
// SIGKILL tests (TestCrashRelay) cannot show this, since the page cache
// outlives the process.

// powerCut runs the daemon with args and data on crashfs, sends n messages
// from several clients, and calls survivors on the surviving data
// directory at each cut. Every message acknowledged before a cut must be
// among its survivors, unless wantLoss (the daemon runs with --no-fsync,
// to show that the test can see a loss): then some cut must lose one.
func powerCut(t *testing.T, n int, args []string, wantLoss bool, survivors func(t *testing.T, data string) map[int]bool) {
	fsys := crashfs.ForTest(t)
	data := filepath.Join(fsys.Dir, "data")
	// Its cleanup stops it before crashfs's unmounts (cleanups run last
	// registered first).
	d := startDaemon(t, daemonOptions{Args: append(args, "--data", data)})

	var mu sync.Mutex
	acked := map[int]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	from := mustAddr(t, sender)
	const workers = 4
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				to := []smtp.Address{mustAddr(t, fmt.Sprintf("r%d@down.test", i))}
				res, err := sendMail(ctx, d.SMTP, from, to, powerCutMessage(i))
				if err != nil || res.Reply.Code != 250 {
					t.Errorf("message %d: %v %v", i, err, res)
					return
				}
				mu.Lock()
				acked[i] = true
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	cuts, lost := 0, 0
	for finished := false; !finished; cuts++ {
		select {
		case <-done:
			finished = true
		case <-time.After(5 * time.Millisecond):
		}
		mu.Lock()
		before := make(map[int]bool, len(acked))
		for i := range acked {
			before[i] = true
		}
		mu.Unlock()
		found := survivors(t, filepath.Join(fsys.Cut(t), "data"))
		for i := range before {
			if found[i] {
				continue
			}
			lost++
			if !wantLoss {
				t.Errorf("cut %d: message %d was answered 250 before the cut and did not survive it (%d of %d did)",
					cuts, i, len(found), len(before))
			}
		}
		if t.Failed() {
			return
		}
	}
	if wantLoss {
		if lost == 0 {
			t.Errorf("with --no-fsync, %d power cuts lost no acknowledged message: the test cannot see a loss", cuts)
		}
		return
	}
	if files, dirs := fsys.Syncs(); files < n || dirs == 0 {
		t.Errorf("the daemon made %d file and %d directory fsyncs for %d messages", files, dirs, n)
	}
	t.Logf("%d power cuts checked, %d messages", cuts, n)
}

func powerCutMessage(i int) []byte {
	return []byte(fmt.Sprintf("From: a@sender.test\r\nTo: r%d@down.test\r\nMessage-ID: <%d@powercut.test>\r\nSubject: %d\r\n\r\n%s",
		i, i, i, strings.Repeat(fmt.Sprintf("line of message %d\r\n", i), 5+i%40)))
}

// TestPowerCutMaildir: messages stored in the Maildir.
func TestPowerCutMaildir(t *testing.T) {
	t.Parallel()
	for _, noSync := range []bool{false, true} {
		t.Run(fmt.Sprintf("no-fsync=%v", noSync), func(t *testing.T) {
			var args []string
			if noSync {
				args = []string{"--no-fsync"}
			}
			powerCut(t, 300, args, noSync, maildirSurvivors)
		})
	}
}

// maildirSurvivors returns the messages whole in the surviving new/; a
// partial one fails the test whatever the mode.
func maildirSurvivors(t *testing.T, data string) map[int]bool {
	dir := filepath.Join(data, "maildir", "new")
	ents, _ := os.ReadDir(dir)
	found := map[int]bool{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		loc := receivedRE.FindIndex(b)
		var i int
		if loc != nil {
			fmt.Sscanf(string(b[loc[1]:]), "From: a@sender.test\r\nTo: r%d@", &i)
		}
		if loc == nil || !bytes.Equal(b[loc[1]:], powerCutMessage(i)) {
			if len(b) > 0 { // --no-fsync leaves empty files, and says so
				t.Errorf("%s survived but is not a whole message:\n%q", e.Name(), head(b, 200))
			}
			continue
		}
		found[i] = true
	}
	return found
}

// TestPowerCutQueue: messages queued for relaying to an MX that is down.
// What survives is read back by "smtpkit queue list" on the surviving
// directory, which recovers the spool as a restart would.
func TestPowerCutQueue(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "127.0.0.2") // nothing listens there: everything stays queued
	dns := dnstest.New(t, "down.test. MX 10 mx.down.test.", "mx.down.test. A 127.0.0.2")
	for _, noSync := range []bool{false, true} {
		t.Run(fmt.Sprintf("no-fsync=%v", noSync), func(t *testing.T) {
			args := relayArgs(dns.Addr, port, "--retry-min", "1h")
			if noSync {
				args = append(args, "--no-fsync")
			}
			powerCut(t, 200, args, noSync, queueSurvivors)
		})
	}
}

// queueSurvivors returns the messages in the spool recovered from the
// surviving directory.
func queueSurvivors(t *testing.T, data string) map[int]bool {
	found := map[int]bool{}
	if _, err := os.Stat(filepath.Join(data, "queue")); err != nil {
		return found // nothing durable yet
	}
	for _, m := range queueJSON(t, data, "list").Messages {
		for _, r := range m.Recipients {
			var i int
			if _, err := fmt.Sscanf(r.Address.String(), "r%d@down.test", &i); err == nil {
				found[i] = m.Size >= int64(len(powerCutMessage(i)))
			}
		}
	}
	return found
}

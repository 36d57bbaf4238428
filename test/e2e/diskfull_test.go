//go:build linux

package e2e

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// diskFullDaemon starts the daemon with its data on a 256 KiB tmpfs, in
// Maildir mode or relaying (to an MX never reached, so mail stays queued).
func diskFullDaemon(t *testing.T, queue bool, args ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	data := filepath.Join(dir, "data")
	if queue {
		args = append(relayArgs("127.0.0.1:1", mxPort(t), "--retry-min", "1h"), args...)
	}
	d := startDaemon(t, daemonOptions{Args: append(args, "--data", data)})
	d.Data = data
	t.Cleanup(func() { d.stop() }) // before the unmount
	return d
}

func filler(tag string, lines int) []byte {
	return append(testMessage(tag), bytes.Repeat([]byte(strings.Repeat("x", 76)+"\r\n"), lines)...)
}

var mailRefusedFull = regexp.MustCompile(`(?m)^ -> MAIL FROM:<[^>]*>\r?\n<\*\* 452 4\.3\.1 Insufficient system storage`)

// TestDiskFull: with less free space than --min-free (by default 1.5 times
// --max-size), MAIL is refused with 452 4.3.1 (RFC 3463: mail system full)
// before the client sends anything; and a message that runs out of disk
// anyway (the check off) is answered 452 4.3.1, not accepted and not a
// crash, and leaves room for the next one (Maildir).
func TestDiskFull(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"maildir", "queue"} {
		t.Run(mode+"/refused at MAIL", func(t *testing.T) {
			t.Parallel()
			// 60 000-byte limit: MAIL needs 90 000 bytes free.
			d := diskFullDaemon(t, mode == "queue", "--max-size", "60000")
			msg := filler("disk-fill", 600) // ~48 KB
			accepted := 0
			for i := range 8 {
				r := swaks(t, d.SMTP, "--from", "a@example.com", "--to", fmt.Sprintf("r%d@example.com", i),
					"--data", "@"+writeFile(t, "fill.eml", msg))
				if r.Code == 0 {
					accepted++
					continue
				}
				if !mailRefusedFull.MatchString(r.Stdout) {
					t.Fatalf("message %d: swaks exited %d, want 250 or a 452 4.3.1 to MAIL:\n%s", i, r.Code, r.Output())
				}
				if accepted == 0 {
					t.Fatalf("MAIL refused on an empty 256 KiB disk:\n%s", r.Output())
				}
				t.Logf("%d messages of %d bytes accepted, then MAIL refused", accepted, len(msg))
				return
			}
			t.Fatalf("8 messages of %d bytes accepted on a 256 KiB disk: MAIL was never refused", len(msg))
		})
		t.Run(mode+"/full at DATA", func(t *testing.T) {
			t.Parallel()
			d := diskFullDaemon(t, mode == "queue", "--min-free", "0")
			big := filler("disk-full", 8000) // ~630 KB
			r := swaks(t, d.SMTP, "--from", "a@example.com", "--to", "b@example.com", "--data", "@"+writeFile(t, "big.eml", big))
			if r.Code == 0 || !strings.Contains(r.Stdout, "<** 452 4.3.1 Insufficient system storage") {
				t.Fatalf("a message larger than the disk: swaks exited %d, want a 452 4.3.1 after the data:\n%s", r.Code, r.Output())
			}
			if mode == "queue" {
				// The queue keeps the dead records until their segment is
				// compacted away, so the next message may not fit yet.
				return
			}
			small := testMessage("after-disk-full")
			for i := range 3 { // the failed message left nothing behind
				r = swaks(t, d.SMTP, "--from", "a@example.com", "--to", fmt.Sprintf("c%d@example.com", i),
					"--data", "@"+writeFile(t, "small.eml", small))
				if r.Code != 0 {
					t.Fatalf("message %d after the full disk: swaks exited %d:\n%s", i, r.Code, r.Output())
				}
			}
			for _, f := range d.waitMessages(3) {
				d.check(f, swaksSent(t, r.Stdout))
			}
		})
	}
}

//go:build linux

package maildir_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/smtpkit/smtpkit/internal/crashfs"
	"github.com/smtpkit/smtpkit/maildir"
)

// TestPowerCut delivers messages from several goroutines into a Maildir on
// crashfs and, many times while they run, cuts the power: every message
// Deliver had acknowledged before the cut must be in the surviving new/,
// whole, and new/ must hold nothing else than whole messages.
func TestPowerCut(t *testing.T) {
	fsys := crashfs.ForTest(t)
	// Two levels that do not exist yet: Open must make the whole chain
	// durable, not only the last directory.
	md, err := maildir.Open(filepath.Join(fsys.Dir, "data", "maildir"), maildir.Options{Hostname: "mx.test"})
	if err != nil {
		t.Fatal(err)
	}
	msg := func(i int) []byte {
		return []byte(fmt.Sprintf("Message-ID: <%d@crash.test>\r\nSubject: %d\r\n\r\n%s\r\n", i, i, strings.Repeat("body line\r\n", i%50)))
	}

	var mu sync.Mutex
	acked := map[string]bool{} // Message-ID lines acknowledged
	const workers, perWorker = 4, 30
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range perWorker {
				i := w*perWorker + k
				if _, err := md.Deliver(context.Background(), []byte("Received: test\r\n"), bytes.NewReader(msg(i))); err != nil {
					t.Errorf("Deliver %d: %v", i, err)
					return
				}
				mu.Lock()
				acked[fmt.Sprintf("<%d@crash.test>", i)] = true
				mu.Unlock()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	cuts := 0
	for finished := false; !finished; cuts++ {
		select {
		case <-done:
			finished = true // one last cut after everything was acknowledged
		default:
		}
		mu.Lock()
		before := make(map[string]bool, len(acked))
		for k := range acked {
			before[k] = true
		}
		mu.Unlock()
		snap := fsys.Cut(t)
		found := map[string]bool{}
		ents, _ := os.ReadDir(filepath.Join(snap, "data", "maildir", "new"))
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(snap, "data", "maildir", "new", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			id, ok := checkWhole(b, msg)
			if !ok {
				t.Fatalf("cut %d: %s in new/ is not a whole message: %q", cuts, e.Name(), b)
			}
			found[id] = true
		}
		for id := range before {
			if !found[id] {
				t.Fatalf("cut %d: %s was acknowledged before the cut and did not survive it (%d of %d acknowledged survived)",
					cuts, id, len(found), len(before))
			}
		}
	}
	if files, dirs := fsys.Syncs(); files < workers*perWorker || dirs == 0 {
		t.Errorf("%d file and %d directory fsyncs for %d messages", files, dirs, workers*perWorker)
	}
	t.Logf("%d power cuts checked", cuts)
}

// checkWhole reports the Message-ID of b, a delivered file, if it is the
// test's header and one of the messages whole.
func checkWhole(b []byte, msg func(int) []byte) (string, bool) {
	rest, ok := bytes.CutPrefix(b, []byte("Received: test\r\n"))
	if !ok {
		return "", false
	}
	var i int
	if _, err := fmt.Sscanf(string(rest), "Message-ID: <%d@crash.test>", &i); err != nil {
		return "", false
	}
	return fmt.Sprintf("<%d@crash.test>", i), bytes.Equal(rest, msg(i))
}

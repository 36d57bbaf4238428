package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/client"
	"github.com/smtpkit/smtpkit/internal/dnstest"
	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/smtp"
)

// crashRcpt is the recipient of message i of the crash test: even ones go
// to a domain whose MX is up, odd ones to one whose MX is down until the
// kills are over, so that the relay must carry them through every crash.
func crashRcpt(i int) string {
	if i%2 == 0 {
		return "b@now.test"
	}
	return "b@later.test"
}

// crashMessage is message i of the crash test, named by its Message-ID.
func crashMessage(i int) []byte {
	return []byte(fmt.Sprintf("From: <a@sender.test>\r\nTo: <%s>\r\nSubject: crash %d\r\n"+
		"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <crash-%d@e2e.test>\r\n\r\n"+
		"message %d\r\n%s", crashRcpt(i), i, i, i, bytes.Repeat([]byte("0123456789012345678901234567890123456789\r\n"), 10+i%100)))
}

var crashIDRE = regexp.MustCompile(`(?m)^Message-ID: <crash-(\d+)@e2e\.test>\r$`)

// TestCrashRelay kills a durable relay (fsync on) with SIGKILL at random
// moments while several clients send it messages, restarting it each time
// on the same data directory and address. Half the messages are delivered
// as they come (so kills also land in deliveries), half wait in the queue
// for an MX that is down until the kills are over. Every message a client
// got a 250 for must reach its MX (Queue: "when Put returns nil, the
// message survives a crash"); a message may arrive twice (a client that
// lost its 250 sends again, and a delivery whose result was not recorded
// is made again), which is counted, not failed.
func TestCrashRelay(t *testing.T) {
	const (
		total       = 300
		workers     = 8
		kills       = 5
		loadTimeout = 3 * time.Minute
	)
	port := mxPort(t, "127.0.0.2", "127.0.0.3")
	mxNow := startMX(t, "127.0.0.2", port, false)
	dns := dnstest.New(t, append(senderZone("127.0.0.2"),
		"now.test. MX 10 mx.now.test.", "mx.now.test. A 127.0.0.2",
		"later.test. MX 10 mx.later.test.", "mx.later.test. A 127.0.0.3")...)
	data := t.TempDir()
	args := relayArgs(dns.Addr, port)
	relay := startRelay(t, data, "", args...)
	listen := relay.SMTP // every restart listens here again

	var (
		acked      [total]atomic.Bool
		resent     [total]atomic.Bool // a transaction for it got no 250
		attempts   atomic.Int64       // transactions started
		failed     atomic.Int64       // transactions that got no 250
		dialFailed atomic.Int64       // connections refused while the relay was down
		refused    atomic.Int64       // 5xx
	)
	from := mustAddr(t, sender)
	rcpts := map[bool][]client.Recipient{
		true: {{Address: mustAddr(t, crashRcpt(0))}}, false: {{Address: mustAddr(t, crashRcpt(1))}}}
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	work := make(chan int, total)
	for i := range total {
		work <- i
	}
	close(work)
	var killing atomic.Bool
	killing.Store(true)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *client.Client
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			for i := range work {
				msg := crashMessage(i)
				for ctx.Err() == nil {
					if c == nil {
						var err error
						if c, err = client.Dial(ctx, listen, client.Options{LocalName: "client.example"}); err != nil {
							c = nil
							dialFailed.Add(1)
							time.Sleep(20 * time.Millisecond) // the relay is down: try again
							continue
						}
					}
					attempts.Add(1)
					res, err := c.Send(ctx, from, &smtp.MailOptions{}, rcpts[i%2 == 0], bytes.NewReader(msg), int64(len(msg)))
					if err == nil && res.Reply.Code == 250 && res.Rcpt[0] == nil {
						acked[i].Store(true)
						if killing.Load() {
							// Spread the load over the kills, so that they
							// land while messages are coming in.
							time.Sleep(time.Duration(60+rand.IntN(120)) * time.Millisecond)
						}
						break
					}
					if err == nil && res.Rcpt[0] != nil && smtp.ErrorOf(res.Rcpt[0]).Permanent() {
						refused.Add(1) // not a crash: a test bug
						break
					}
					// No 250 (the connection broke, or a refusal while
					// stopping): the message is not ours yet; send it again
					// on a new connection.
					failed.Add(1)
					resent[i].Store(true)
					c.Close()
					c = nil
				}
			}
		}()
	}
	loadDone := make(chan struct{})
	go func() { wg.Wait(); close(loadDone) }()

	duringLoad := 0
	for range kills {
		time.Sleep(time.Duration(100+rand.IntN(500)) * time.Millisecond)
		select {
		case <-loadDone:
		default:
			duringLoad++
		}
		relay.kill()
		relay = startRelay(t, data, listen, args...)
	}
	killing.Store(false)
	select {
	case <-loadDone:
	case <-ctx.Done():
		<-loadDone
	}
	nAcked := 0
	for i := range acked {
		if acked[i].Load() {
			nAcked++
		}
	}
	if n := refused.Load(); n > 0 {
		t.Errorf("%d messages were refused with 5xx", n)
	}
	if nAcked < total {
		t.Errorf("only %d of %d messages were acknowledged within %v", nAcked, total, loadTimeout)
	}

	// Bring up the MX the odd messages waited for; the last relay delivers
	// what is left, and then the MX hosts must hold every acknowledged
	// message.
	held := len(queueJSON(t, data, "list").Messages)
	mxLater := startMX(t, "127.0.0.3", port, false)
	waitQueue(t, data, "empty", 3*time.Minute, func(m []*queue.Message) bool { return len(m) == 0 })
	count := map[int]int{}
	files := append(listDir(t, mxNow.Maildir()), listDir(t, mxLater.Maildir())...)
	for _, f := range files {
		m := crashIDRE.FindSubmatch(readFile(t, f))
		if m == nil {
			t.Errorf("%s is not one of ours:\n%s", f, head(readFile(t, f), 2000))
			continue
		}
		i, _ := strconv.Atoi(string(m[1]))
		if want := filepath.Dir(filepath.Dir(filepath.Dir(f))) == mxNow.Data; want != (i%2 == 0) {
			t.Errorf("message %d went to the wrong MX", i)
		}
		count[i]++
	}
	var lost, dups []int
	unacked, dupResent := 0, 0
	for i := range total {
		if acked[i].Load() && count[i] == 0 {
			lost = append(lost, i)
		}
		if count[i] > 1 {
			dups = append(dups, i)
			if resent[i].Load() {
				dupResent++
			}
		}
		if !acked[i].Load() && count[i] > 0 {
			unacked++
		}
	}
	extra := len(files) - len(count)
	sort.Ints(dups)
	t.Logf("crash: %d messages, %d transactions (%d without a 250, so sent again), %d connections refused, %d acknowledged; "+
		"%d SIGKILLs (%d during the load), %d messages held in the queue through them; "+
		"%d delivered: %d unique, %d duplicates (of messages %v; %d of them had a transaction without a 250), %d delivered without a 250",
		total, attempts.Load(), failed.Load(), dialFailed.Load(), nAcked, kills, duringLoad, held,
		len(files), len(count), extra, dups, dupResent, unacked)
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged messages were lost: %v", len(lost), lost)
	}
}

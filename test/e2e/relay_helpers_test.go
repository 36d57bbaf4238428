package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"net/textproto"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/client"
	"github.com/smtpkit/smtpkit/internal/queuectl"
	"github.com/smtpkit/smtpkit/internal/testcert"
	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/smtp"
)

// Relay tests put several MX hosts on one port (every MX is reached on the
// relay's --mx-port) by giving each its own loopback address, 127.0.0.2 and
// up; 127.0.0.1 is left to the relays and the harness's other daemons.

const relayTimeout = 90 * time.Second // bound on a message crossing the relay

var (
	portsMu    sync.Mutex
	portsTaken = map[int]bool{} // MX ports handed out in this process
)

// mxPort returns a TCP port that is free on 127.0.0.1 and on each of ips,
// and that no other test of this process was given (so that an address
// chosen to refuse connections stays unbound).
func mxPort(t testing.TB, ips ...string) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		portsMu.Lock()
		taken := portsTaken[port]
		portsTaken[port] = true
		portsMu.Unlock()
		if taken {
			continue
		}
		free := true
		for _, ip := range ips {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return port
		}
	}
	t.Fatalf("no port free on all of %v", ips)
	return 0
}

func joinPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }

// startMX starts a receiving smtpkit (storing to its Maildir) on ip:port.
func startMX(t testing.TB, ip string, port int, tls bool, args ...string) *daemon {
	t.Helper()
	return startDaemon(t, daemonOptions{Listen: joinPort(ip, port), StartTLS: tls, Args: args})
}

// relayArgs are the serve flags of an MX relay with quick retries.
func relayArgs(dns string, mxPort int, more ...string) []string {
	return append([]string{"--relay", "mx", "--dns", dns, "--mx-port", strconv.Itoa(mxPort),
		"--retry-min", "200ms", "--retry-max", "1s"}, more...)
}

// startRelay starts a relaying smtpkit with args (later flags override
// earlier ones). A non-empty data dir is used instead of a new one, and a
// non-empty listen address instead of a free port, for restarts.
func startRelay(t testing.TB, data, listen string, args ...string) *daemon {
	t.Helper()
	if data != "" {
		args = append(append([]string{}, args...), "--data", data)
	}
	d := startDaemon(t, daemonOptions{Listen: listen, Args: args})
	if data != "" {
		d.Data = data
	}
	return d
}

// sink is a running Postfix smtp-sink.
type sink struct {
	t      testing.TB
	Addr   string
	cmd    *exec.Cmd
	log    *logBuffer
	exited chan struct{}
}

// startSink runs smtp-sink -v on addr with more options (-r, -f, -b ...),
// and waits for its greeting.
func startSink(t testing.TB, addr string, args ...string) *sink {
	t.Helper()
	bin := tool(t, "smtp-sink", "/usr/sbin/smtp-sink")
	argv := []string{"-v"}
	if os.Geteuid() == 0 {
		argv = append(argv, "-u", "nobody") // it refuses to run as root
	}
	argv = append(append(argv, args...), addr, "100")
	s := &sink{t: t, Addr: addr, log: &logBuffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, argv...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("smtp-sink %s log:\n%s", addr, s.log.String())
		}
	})
	deadline := time.Now().Add(startTimeout)
	for {
		if greets(addr) {
			return s
		}
		select {
		case <-s.exited:
			t.Fatalf("smtp-sink %v exited:\n%s", argv, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("smtp-sink on %s: no greeting after %v:\n%s", addr, startTimeout, s.log.String())
		}
	}
}

// greets reports whether an SMTP server on addr answers with 220.
func greets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "220") {
		return false
	}
	c.Write([]byte("QUIT\r\n"))
	return true
}

// stop ends the sink (by its PID) and waits for it.
func (s *sink) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// commands counts the lines of the sink's transcript that start with the
// command prefix (such as "RCPT TO:<x@y>").
func (s *sink) commands(prefix string) int {
	n := 0
	for _, l := range strings.Split(s.log.String(), "\n") {
		if _, c, ok := strings.Cut(l, ": "); ok && strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func mustAddr(t testing.TB, s string) smtp.Address {
	t.Helper()
	a, err := smtp.ParseAddress(s)
	if err != nil {
		t.Fatalf("address %q: %v", s, err)
	}
	return a
}

// sendMail sends one message over a new connection, as client.example.
// The error is a connection failure; refusals are in the result.
func sendMail(ctx context.Context, addr string, from smtp.Address, to []smtp.Address, msg []byte) (*client.Result, error) {
	c, err := client.Dial(ctx, addr, client.Options{LocalName: "client.example"})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	rcpts := make([]client.Recipient, len(to))
	for i, a := range to {
		rcpts[i] = client.Recipient{Address: a}
	}
	res, err := c.Send(ctx, from, &smtp.MailOptions{}, rcpts, bytes.NewReader(msg), int64(len(msg)))
	if err != nil {
		return nil, err
	}
	c.Quit(ctx)
	return res, nil
}

var queuedAsRE = regexp.MustCompile(`queued as ([0-9a-z]+)`)

// mustQueue sends a message to a relay, requires every recipient to be
// accepted, and returns its queue ID.
func mustQueue(t testing.TB, addr, from string, to []string, msg []byte) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	var rcpts []smtp.Address
	for _, s := range to {
		rcpts = append(rcpts, mustAddr(t, s))
	}
	res, err := sendMail(ctx, addr, mustAddr(t, from), rcpts, msg)
	if err != nil {
		t.Fatalf("sending to %s: %v", addr, err)
	}
	for i, e := range res.Rcpt {
		if e != nil {
			t.Fatalf("relay refused <%s>: %v", to[i], e)
		}
	}
	m := queuedAsRE.FindStringSubmatch(res.Reply.Text())
	if res.Reply.Code != 250 || m == nil {
		t.Fatalf("final reply %d %q, want 250 ... queued as ID", res.Reply.Code, res.Reply.Text())
	}
	return m[1]
}

// queueCommand is "smtpkit queue --data data args...". A -race build
// would sleep a second at exit (GORACE atexit_sleep_ms), which adds up
// when a test polls the queue.
func queueCommand(ctx context.Context, data string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, binPath, append([]string{"queue", "--data", data}, args...)...)
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// queueJSON runs "smtpkit queue --json" with args on a data dir.
func queueJSON(t testing.TB, data string, args ...string) queuectl.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	cmd := queueCommand(ctx, data, append([]string{"--json"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var resp queuectl.Response
	if jerr := json.Unmarshal(out, &resp); jerr != nil {
		t.Fatalf("smtpkit queue --json %v: %v (%v)\n%s%s", args, jerr, err, out, stderr.Bytes())
	}
	if err != nil || resp.Error != "" {
		t.Fatalf("smtpkit queue --json %v: %v %q\n%s", args, err, resp.Error, stderr.Bytes())
	}
	return resp
}

// queueCLI runs "smtpkit queue" (human output) with args on a data dir;
// its output is logged if the test fails.
func queueCLI(t testing.TB, data string, args ...string) peerResult {
	t.Helper()
	return runPeer(t, nil, binPath, append([]string{"queue", "--data", data}, args...)...)
}

// waitQueue polls "queue list --json" until ok holds, and returns the list.
func waitQueue(t testing.TB, data, what string, timeout time.Duration, ok func([]*queue.Message) bool) []*queue.Message {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := queueJSON(t, data, "list").Messages
		if ok(msgs) {
			return msgs
		}
		if time.Now().After(deadline) {
			b, _ := json.MarshalIndent(msgs, "", "  ")
			t.Fatalf("queue in %s: not %s after %v; it holds:\n%s", data, what, timeout, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func waitQueueEmpty(t testing.TB, data string) {
	t.Helper()
	waitQueue(t, data, "empty", relayTimeout, func(m []*queue.Message) bool { return len(m) == 0 })
}

// findMessage returns the queued message with the given ID, or nil.
func findMessage(msgs []*queue.Message, id string) *queue.Message {
	for _, m := range msgs {
		if m.ID == id {
			return m
		}
	}
	return nil
}

// waitMail polls a daemon's Maildir until it holds n messages (bounded by
// relayTimeout, and failing if it holds more) and returns them.
func waitMail(t testing.TB, d *daemon, n int) []string {
	t.Helper()
	deadline := time.Now().Add(relayTimeout)
	for {
		files := listDir(t, d.Maildir())
		if len(files) == n {
			return files
		}
		if len(files) > n || time.Now().After(deadline) {
			t.Fatalf("%s has %d messages, want %d", d.Maildir(), len(files), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mailWith returns the files among files whose content contains s.
func mailWith(t testing.TB, files []string, s string) []string {
	t.Helper()
	var out []string
	for _, f := range files {
		if bytes.Contains(readFile(t, f), []byte(s)) {
			out = append(out, f)
		}
	}
	return out
}

// stripReceived removes n leading Received headers (ours, as receivedRE
// matches them) and returns them and the rest.
func stripReceived(t testing.TB, b []byte, n int) ([]string, []byte) {
	t.Helper()
	var hdrs []string
	for range n {
		loc := receivedRE.FindIndex(b)
		if loc == nil {
			t.Fatalf("want %d Received headers at the top, found %d:\n%q", n, len(hdrs), head(b, 400))
		}
		hdrs = append(hdrs, string(b[:loc[1]]))
		b = b[loc[1]:]
	}
	return hdrs, b
}

// dsnReport is a parsed delivery status notification (RFC 3464, 6522).
type dsnReport struct {
	Header       mail.Header
	Text         string                 // the human-readable part
	PerMessage   textproto.MIMEHeader   // per-message fields
	Recipients   []textproto.MIMEHeader // per-recipient fields
	OriginalType string
	Original     []byte
}

// parseDSN parses a bounce with Go's net/mail and mime/multipart, failing
// the test unless it is a multipart/report; report-type=delivery-status
// with a text part, a message/delivery-status part and, optionally, the
// original.
func parseDSN(t testing.TB, raw []byte) *dsnReport {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("bounce does not parse as a message: %v\n%s", err, raw)
	}
	r := &dsnReport{Header: msg.Header}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" || params["boundary"] == "" {
		t.Fatalf("bounce Content-Type %q (%v): want multipart/report; report-type=delivery-status\n%s",
			msg.Header.Get("Content-Type"), err, raw)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("bounce MIME structure: %v\n%s", err, raw)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatalf("bounce part: %v", err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
		switch len(types) {
		case 1:
			r.Text = string(b)
		case 2:
			r.PerMessage, r.Recipients = parseStatusFields(t, b)
		case 3:
			r.OriginalType, r.Original = ct, b
		}
	}
	if len(types) < 2 || len(types) > 3 || types[0] != "text/plain" || types[1] != "message/delivery-status" {
		t.Fatalf("bounce parts %v, want text/plain, message/delivery-status[, original]\n%s", types, raw)
	}
	return r
}

// parseStatusFields splits a message/delivery-status body into its
// per-message block and per-recipient blocks.
func parseStatusFields(t testing.TB, b []byte) (textproto.MIMEHeader, []textproto.MIMEHeader) {
	t.Helper()
	tr := textproto.NewReader(bufio.NewReader(bytes.NewReader(b)))
	var blocks []textproto.MIMEHeader
	for {
		h, err := tr.ReadMIMEHeader()
		if len(h) > 0 {
			blocks = append(blocks, h)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("delivery-status fields: %v\n%s", err, b)
		}
	}
	if len(blocks) < 2 {
		t.Fatalf("delivery-status has %d blocks, want per-message and per-recipient ones:\n%s", len(blocks), b)
	}
	return blocks[0], blocks[1:]
}

// finalRecipients returns the address of each per-recipient block, after
// "rfc822; ".
func (r *dsnReport) finalRecipients() []string {
	var out []string
	for _, h := range r.Recipients {
		_, a, _ := strings.Cut(h.Get("Final-Recipient"), ";")
		out = append(out, strings.TrimSpace(a))
	}
	return out
}

// testCA is a certificate authority made by the test, for MTA-STS hosts
// and MX hosts that must validate.
type testCA struct {
	cert *testcert.Cert
	File string // its certificate, PEM, for --relay-ca
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	c, err := testcert.New(testcert.Options{CommonName: "smtpkit e2e CA", CA: true})
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: c, File: writeFile(t, "ca.pem", c.CertPEM())}
}

// issue makes a server certificate for names, signed by the CA, and
// returns it with the paths of its PEM certificate and key files.
func (ca *testCA) issue(t testing.TB, names ...string) (tls.Certificate, string, string) {
	t.Helper()
	c, err := testcert.New(testcert.Options{Names: names, Parent: ca.cert})
	if err != nil {
		t.Fatal(err)
	}
	return c.TLSCertificate(), writeFile(t, names[0]+".pem", c.CertPEM()), writeFile(t, names[0]+".key", c.KeyPEM())
}

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/internal/testcert"
)

const (
	hostname     = "mx.test" // --hostname of every daemon
	testUser     = "alice"
	testPassword = "hunter2 c0rrect-horse" // a space must survive SASL (smtplib cannot send UTF-8 ones)
	peerTimeout  = 2 * time.Minute         // bound on any one run of a peer
	startTimeout = time.Minute             // bound on the daemon coming up
	stopTimeout  = time.Minute             // bound on a graceful stop
	pollTimeout  = 30 * time.Second        // bound on waiting for files to appear
)

// Set up once by TestMain.
var (
	binPath   string // the smtpkit binary under test
	certFile  string // self-signed ECDSA certificate for 127.0.0.1, ::1, localhost
	keyFile   string
	usersFile string // testUser's bcrypt hash, made by "smtpkit hash"
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	if runtime.GOOS == "windows" {
		fmt.Println("e2e: skipped on windows (the peers are Unix tools)")
		return 0
	}
	dir, err := os.MkdirTemp("", "smtpkit-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	binPath = filepath.Join(dir, "smtpkit")
	args := []string{"build", "-o", binPath}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/smtpkit/smtpkit/cmd/smtpkit")
	if out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go %s: %v\n%s", strings.Join(args, " "), err, out)
		return 1
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := writeCert(certFile, keyFile); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cert:", err)
		return 1
	}
	usersFile = filepath.Join(dir, "users")
	if err := writeUsers(ctx, usersFile); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: users:", err)
		return 1
	}
	return m.Run()
}

// writeCert makes a self-signed certificate valid for the loopback
// addresses, localhost and the daemons' hostname. It is a CA because it
// is also the root that the peers (curl, Python) and --relay-ca trust.
func writeCert(certPath, keyPath string) error {
	c, err := testcert.New(testcert.Options{
		CommonName: "smtpkit e2e",
		Names:      []string{"localhost", hostname, "127.0.0.1", "::1"},
		CA:         true,
	})
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, c.CertPEM(), 0o600); err != nil {
		return err
	}
	return os.WriteFile(keyPath, c.KeyPEM(), 0o600)
}

// writeUsers makes the --users file the way the README says: with
// "smtpkit hash".
func writeUsers(ctx context.Context, path string) error {
	cmd := exec.CommandContext(ctx, binPath, "hash")
	cmd.Stdin = strings.NewReader(testPassword + "\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("smtpkit hash: %v: %s", err, stderr.Bytes())
	}
	h := strings.TrimSpace(string(out))
	if !strings.HasPrefix(h, "$2") {
		return fmt.Errorf("smtpkit hash printed %q, want a bcrypt hash", out)
	}
	return os.WriteFile(path, []byte("# e2e users\n\n"+testUser+":"+h+"\n"), 0o600)
}

// tool returns the path of the first of names that is installed. A missing
// peer skips the test, or fails it under SMTPKIT_REQUIRE_PEERS=1.
func tool(t testing.TB, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("SMTPKIT_REQUIRE_PEERS") == "1" {
		t.Fatalf("peer %s is not installed, and SMTPKIT_REQUIRE_PEERS=1", names[0])
	}
	t.Skipf("peer %s is not installed (set SMTPKIT_REQUIRE_PEERS=1 to make this a failure)", names[0])
	return ""
}

// peerResult is what a run of a peer printed and how it exited.
type peerResult struct {
	Stdout, Stderr string
	Code           int
}

// Output is stdout and stderr together, for searching transcripts.
func (r peerResult) Output() string { return r.Stdout + r.Stderr }

// runPeer runs a client program to completion (bounded by peerTimeout) and
// returns its output; the output is logged if the test fails.
func runPeer(t testing.TB, stdin []byte, name string, args ...string) peerResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), peerTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.WaitDelay = 10 * time.Second
	// GORACE: our own binary, built with -race under -race, need not
	// wait a second at exit.
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "PYTHONIOENCODING=utf-8", "GORACE=atexit_sleep_ms=0")
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := peerResult{Stdout: stdout.String(), Stderr: stderr.String(), Code: -1}
	if cmd.ProcessState != nil {
		r.Code = cmd.ProcessState.ExitCode()
	}
	line := filepath.Base(name) + " " + strings.Join(args, " ")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("$ %s\nexit %d\n--- stdout:\n%s\n--- stderr:\n%s", line, r.Code, r.Stdout, r.Stderr)
		}
	})
	if ctx.Err() != nil {
		t.Fatalf("%s: still running after %v", line, peerTimeout)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", line, err)
	}
	return r
}

// logBuffer collects the daemon's log.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// daemon is a running "smtpkit serve".
type daemon struct {
	t    testing.TB
	cmd  *exec.Cmd
	Data string // the --data directory
	// Addresses of the listeners that were asked for.
	SMTP, SMTPS, LMTP string
	hostname          string // --hostname, "" for the system's
	log               *logBuffer
	exited            chan struct{}
	exitCode          int
}

type daemonOptions struct {
	StartTLS    bool     // --tls-cert and --tls-key
	Users       bool     // --users
	ImplicitTLS bool     // also a --tls-listen address; implies StartTLS
	LMTP        bool     // also an --lmtp-listen address
	Args        []string // more serve flags

	// NoFlags runs plain "smtpkit serve" in Dir, as the README does; it
	// must listen on 127.0.0.1:2525 and store under Dir/smtpkit-data.
	NoFlags bool
	Dir     string
	// Listen, if set, is the SMTP address instead of a free loopback port.
	Listen string
	// Wrap runs the daemon under another command (such as unshare),
	// which must end by exec'ing the rest of its arguments.
	Wrap []string
}

var errPortTaken = errors.New("port taken")

// startDaemon starts the binary and waits for its "listening" log lines.
// Ports are picked by binding :0 and closing; if another process takes one
// in between, the daemon fails to bind and is started again on new ports.
func startDaemon(t testing.TB, o daemonOptions) *daemon {
	t.Helper()
	for attempt := 1; ; attempt++ {
		d, err := tryStart(t, o)
		if err == nil {
			t.Cleanup(d.cleanup)
			return d
		}
		if errors.Is(err, errPortTaken) && o.NoFlags {
			t.Skipf("the default address is taken: %v", err)
		}
		if !errors.Is(err, errPortTaken) || o.Listen != "" || attempt == 5 {
			t.Fatalf("starting smtpkit: %v", err)
		}
		t.Logf("attempt %d: %v; trying other ports", attempt, err)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

func tryStart(t testing.TB, o daemonOptions) (*daemon, error) {
	d := &daemon{t: t, log: &logBuffer{}, exited: make(chan struct{})}
	var args []string
	want := map[string]bool{}
	if o.NoFlags {
		args = []string{"serve"}
		d.SMTP = "127.0.0.1:2525"
		d.Data = filepath.Join(o.Dir, "smtpkit-data")
		want[d.SMTP] = true
	} else {
		d.Data = t.TempDir()
		d.hostname = hostname
		d.SMTP = o.Listen
		if d.SMTP == "" {
			d.SMTP = freeAddr(t)
		}
		args = []string{"serve", "--data", d.Data, "--hostname", hostname, "--log-level", "debug", "--listen", d.SMTP}
		want[d.SMTP] = true
		if o.StartTLS || o.ImplicitTLS {
			args = append(args, "--tls-cert", certFile, "--tls-key", keyFile)
		}
		if o.ImplicitTLS {
			d.SMTPS = freeAddr(t)
			args = append(args, "--tls-listen", d.SMTPS)
			want[d.SMTPS] = true
		}
		if o.LMTP {
			d.LMTP = freeAddr(t)
			args = append(args, "--lmtp-listen", d.LMTP)
			want[d.LMTP] = true
		}
		if o.Users {
			args = append(args, "--users", usersFile)
		}
		args = append(args, o.Args...)
	}
	argv := append([]string{binPath}, args...)
	if len(o.Wrap) > 0 {
		argv = append(append([]string{}, o.Wrap...), argv...)
	}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Dir = o.Dir
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		d.cmd.Wait()
		d.exitCode = d.cmd.ProcessState.ExitCode()
		close(d.exited)
	}()

	deadline := time.Now().Add(startTimeout)
	for {
		seen := 0
		for _, m := range listeningRE.FindAllStringSubmatch(d.log.String(), -1) {
			if want[m[1]] {
				seen++
			}
		}
		if seen == len(want) {
			return d, nil
		}
		select {
		case <-d.exited:
			log := d.log.String()
			if strings.Contains(log, "address already in use") {
				return nil, fmt.Errorf("%w: %s", errPortTaken, log)
			}
			return nil, fmt.Errorf("exited with %d before listening:\n%s", d.exitCode, log)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.kill()
			return nil, fmt.Errorf("not listening on %v after %v:\n%s", want, startTimeout, d.log.String())
		}
	}
}

func (d *daemon) running() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

func (d *daemon) kill() {
	if d.running() {
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// signal sends sig to the daemon (and only to it: by its PID).
func (d *daemon) signal(sig os.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the daemon to exit and returns its exit code.
func (d *daemon) wait() int {
	d.t.Helper()
	select {
	case <-d.exited:
		return d.exitCode
	case <-time.After(stopTimeout):
		d.kill()
		d.t.Fatalf("smtpkit did not exit within %v of SIGTERM", stopTimeout)
		return -1
	}
}

// stop sends SIGTERM and returns the exit code.
func (d *daemon) stop() int {
	d.t.Helper()
	if !d.running() {
		return d.exitCode
	}
	d.signal(syscall.SIGTERM)
	return d.wait()
}

func (d *daemon) cleanup() {
	if d.running() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(stopTimeout):
			d.t.Errorf("smtpkit did not exit within %v of SIGTERM", stopTimeout)
			d.kill()
		}
	}
	log := d.log.String()
	for _, bad := range []string{"WARNING: DATA RACE", "panic:", "level=ERROR"} {
		if strings.Contains(log, bad) {
			d.t.Errorf("daemon log has %q", bad)
		}
	}
	if d.t.Failed() {
		d.t.Logf("daemon log:\n%s", log)
	}
}

// logLines returns the log lines matching re.
func (d *daemon) logLines(re string) []string {
	var out []string
	r := regexp.MustCompile(re)
	for _, l := range strings.Split(d.log.String(), "\n") {
		if r.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// waitLog polls the log until a line matches re.
func (d *daemon) waitLog(re string) string {
	d.t.Helper()
	return d.waitLogCount(re, 1)[0]
}

// waitLogCount polls the log until exactly n lines match re (a session's
// line is logged after its connection closes, so a client may see the end
// first).
func (d *daemon) waitLogCount(re string, n int) []string {
	d.t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for {
		l := d.logLines(re)
		if len(l) == n {
			return l
		}
		if len(l) > n || time.Now().After(deadline) {
			d.t.Fatalf("%d log lines match %q, want %d", len(l), re, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Maildir returns the Maildir's new/ directory.
func (d *daemon) Maildir() string { return filepath.Join(d.Data, "maildir", "new") }

// listDir returns the sorted paths of the files in dir; a missing dir is
// empty.
func listDir(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, filepath.Join(dir, e.Name()))
	}
	sort.Strings(out)
	return out
}

// waitMessages polls new/ until it holds exactly n messages and returns
// them. The daemon replies 250 only after the rename into new/, so once a
// client has its 250 the file is there; polling absorbs no more than the
// time a client takes to exit.
func (d *daemon) waitMessages(n int) []string {
	d.t.Helper()
	deadline := time.Now().Add(pollTimeout)
	for {
		files := listDir(d.t, d.Maildir())
		if len(files) == n {
			if tmp := listDir(d.t, filepath.Join(d.Data, "maildir", "tmp")); len(tmp) > 0 {
				d.t.Errorf("maildir/tmp is not empty after delivery: %v", tmp)
			}
			return files
		}
		if len(files) > n || time.Now().After(deadline) {
			d.t.Fatalf("%s has %d messages, want %d", d.Maildir(), len(files), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noMessages asserts that nothing was delivered.
func (d *daemon) noMessages() {
	d.t.Helper()
	if files := listDir(d.t, d.Maildir()); len(files) > 0 {
		d.t.Fatalf("%s has %d messages, want none", d.Maildir(), len(files))
	}
}

// receivedRE matches our trace header: "Received: from " up to the first
// line that does not start with a tab.
var receivedRE = regexp.MustCompile(`^Received: from [^\r\n]*\r\n(?:\t[^\r\n]*\r\n)*`)

var byRE = regexp.MustCompile(`\r\n\tby \S+ with [A-Z0-9]+ id [0-9a-z]+`)

// receivedDateRE is the end of every Received header: "; " and the date.
var receivedDateRE = regexp.MustCompile(`; ([A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4})\r\n$`)

// checkMessage asserts that the file at path is our Received header
// followed by exactly want, and that the header matches each of the
// regular expressions in recv. It returns the header.
func checkMessage(t testing.TB, path string, want []byte, recv ...string) string {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("%s: mode %v, want no access for group and others", filepath.Base(path), fi.Mode())
	}
	loc := receivedRE.FindIndex(got)
	if loc == nil {
		t.Fatalf("%s does not start with a Received header:\n%q", filepath.Base(path), head(got, 300))
	}
	hdr, body := string(got[:loc[1]]), got[loc[1]:]
	if !bytes.Equal(body, want) {
		i := 0
		for i < len(body) && i < len(want) && body[i] == want[i] {
			i++
		}
		from := max(0, i-40)
		t.Errorf("%s: message differs from what the client sent, at byte %d of %d (want %d bytes)\n got: %q\nwant: %q",
			filepath.Base(path), i, len(body), len(want), head(body[from:], 120), head(want[min(from, len(want)):], 120))
	}
	if m := receivedDateRE.FindStringSubmatch(hdr); m == nil {
		t.Errorf("Received header does not end with a date:\n%s", hdr)
	} else if ts, err := time.Parse(time.RFC1123Z, m[1]); err != nil || time.Since(ts).Abs() > time.Hour {
		t.Errorf("Received date %q: %v, not within an hour of now", m[1], err)
	}
	if !byRE.MatchString(hdr) {
		t.Errorf("Received header has no \"by ... with ... id\" clause:\n%s", hdr)
	}
	for _, r := range recv {
		if !regexp.MustCompile(r).MatchString(hdr) {
			t.Errorf("Received header does not match %q:\n%s", r, hdr)
		}
	}
	return hdr
}

// check is checkMessage for a message this daemon received: its Received
// header also names our --hostname.
func (d *daemon) check(path string, want []byte, recv ...string) string {
	d.t.Helper()
	if d.hostname != "" {
		recv = append(recv, `\tby `+regexp.QuoteMeta(d.hostname)+` with `)
	}
	return checkMessage(d.t, path, want, recv...)
}

func head(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// testMessage is a message that needs dot-stuffing and carries 8-bit text:
// lines that start with one and two dots, a line of only a dot, UTF-8, and
// a 990-octet line (under the 1000-octet limit).
func testMessage(tag string) []byte {
	return []byte("From: Sender <a@example.com>\r\n" +
		"To: Rcpt <b@example.com>\r\n" +
		"Subject: e2e " + tag + "\r\n" +
		"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n" +
		"Message-ID: <" + tag + "@example.com>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		".leading dot\r\n" +
		"..two leading dots\r\n" +
		".\r\n" +
		"Grüße aus Köln, 世界 ✉\r\n" +
		"\r\n" +
		". dot and space\r\n" +
		strings.Repeat("x", 990) + "\r\n" +
		"last line\r\n")
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeFile writes b into a new file in a temporary directory.
func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func hostPort(t testing.TB, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

package smtptest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/smtp"
)

// DefaultTimeout bounds each read and write of a Client whose Timeout is
// zero, so that a server that stops answering fails the test with its
// transcript instead of hanging until the test binary's timeout.
const DefaultTimeout = 10 * time.Second

// maxReplyLine bounds one reply line the Client accepts (RFC 5321
// 4.5.3.1.5 sets 512; a generous bound catches a server that never ends one).
const maxReplyLine = 64 << 10

// transcriptBodyLines is how many lines of a message body the transcript
// keeps; the rest is summarised.
const transcriptBodyLines = 20

// Reply is one server reply, possibly of several lines.
type Reply struct {
	Code int
	// Enhanced is the RFC 3463 code found at the start of the reply's text,
	// zero if there is none (as before EHLO, or in a 354 or EHLO reply).
	Enhanced smtp.EnhancedCode
	// Lines holds the text of each line without the code, the separator
	// and the enhanced code.
	Lines []string
}

// Text returns the reply's lines joined by "\n".
func (r Reply) Text() string { return strings.Join(r.Lines, "\n") }

// String formats the reply as it came on the wire, lines joined by "\n"
// without CRLF.
func (r Reply) String() string {
	var b strings.Builder
	for i, l := range r.Lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(strconv.Itoa(r.Code))
		e := r.Enhanced.String()
		switch {
		case i < len(r.Lines)-1:
			b.WriteByte('-')
		case l != "" || e != "":
			b.WriteByte(' ')
		}
		if e != "" {
			b.WriteString(e)
			if l != "" {
				b.WriteByte(' ')
			}
		}
		b.WriteString(l)
	}
	return b.String()
}

// Err returns the reply as an *smtp.Error if it is a 4xx or 5xx, else nil.
func (r Reply) Err() *smtp.Error {
	if r.Code < 400 {
		return nil
	}
	return smtp.NewError(r.Code, r.Enhanced, r.Text())
}

// Extension looks up an ESMTP keyword in an EHLO or LHLO reply and returns
// its parameters: for "SIZE 10240000", Extension("size") is ("10240000",
// true).
func (r Reply) Extension(name string) (string, bool) {
	for i, l := range r.Lines {
		if i == 0 {
			continue // the greeting line
		}
		kw, param, _ := strings.Cut(l, " ")
		if strings.EqualFold(kw, name) {
			return param, true
		}
	}
	return "", false
}

// Client is a scripted SMTP client that speaks the wire protocol line by
// line, for transcript-style tests. Every method that reads a reply fails
// the test (t.Fatal, with the transcript so far) on a network error, a
// malformed reply or, where a code is given, a different code. Like
// t.Fatal, its methods must be called from the test's goroutine.
type Client struct {
	// Timeout bounds each read of a reply and each write; zero means
	// DefaultTimeout.
	Timeout time.Duration
	// LMTP makes Hello send LHLO and SendMail read one reply per
	// recipient after DATA. Server.Dial sets it from the server.
	LMTP bool
	// HelloName is the name SendMail says in EHLO; "" means "localhost".
	HelloName string

	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	log     []string
	autoTLS *tls.Config
	closed  bool
}

// Dial connects to addr over TCP and closes the connection when the test
// ends. It does not read the greeting: call c.Expect(220) first. t may be
// nil outside tests; failures then panic and the caller must call Close.
func Dial(t testing.TB, addr string) *Client {
	t = orPanicTB(t)
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, DefaultTimeout)
	if err != nil {
		t.Fatalf("smtptest: dial %s: %v", addr, err)
	}
	return NewClient(t, conn)
}

// DialTLS connects to addr over TLS (implicit TLS, RFC 8314) with cfg.
func DialTLS(t testing.TB, addr string, cfg *tls.Config) *Client {
	t = orPanicTB(t)
	t.Helper()
	d := &net.Dialer{Timeout: DefaultTimeout}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("smtptest: dial %s over TLS: %v", addr, err)
	}
	c := NewClient(t, conn)
	c.note("TLS handshake done, " + tls.VersionName(conn.ConnectionState().Version))
	return c
}

// NewClient returns a Client over an established connection, which it
// closes when the test ends.
func NewClient(t testing.TB, conn net.Conn) *Client {
	t = orPanicTB(t)
	c := &Client{t: t, conn: conn, r: bufio.NewReader(conn)}
	t.Cleanup(c.Close)
	return c
}

// Conn returns the underlying connection (the TLS one after StartTLS).
func (c *Client) Conn() net.Conn { return c.conn }

// ConnectionState returns the TLS state, or nil before TLS.
func (c *Client) ConnectionState() *tls.ConnectionState {
	if tc, ok := c.conn.(*tls.Conn); ok {
		st := tc.ConnectionState()
		return &st
	}
	return nil
}

// Transcript returns the dialogue so far, one line per command or reply
// line, prefixed "C: " and "S: ". Lines that do not end in CRLF are shown
// Go-quoted.
func (c *Client) Transcript() string { return strings.Join(c.log, "\n") }

// Close closes the connection. It is safe to call more than once.
func (c *Client) Close() {
	if !c.closed {
		c.closed = true
		c.conn.Close()
	}
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Client) note(s string) { c.log = append(c.log, "-- "+s) }

func (c *Client) fatalf(format string, args ...any) {
	c.t.Helper()
	c.t.Fatalf("smtptest: "+format+"\ntranscript:\n%s", append(args, c.Transcript())...)
}

// Send writes one command line, adding CRLF. It does not read the reply.
func (c *Client) Send(cmd string) {
	c.t.Helper()
	if strings.ContainsAny(cmd, "\r\n") {
		c.fatalf("Send(%q): a command is one line; use Write for raw bytes", cmd)
	}
	c.log = append(c.log, "C: "+cmd)
	c.write(cmd + "\r\n")
}

// Write sends raw bytes as they are: several pipelined commands, bare line
// endings, a partial line. It does not read any reply.
func (c *Client) Write(raw string) {
	c.t.Helper()
	c.logRaw(raw, -1)
	c.write(raw)
}

func (c *Client) write(s string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(c.timeout()))
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.fatalf("write: %v", err)
	}
}

// logRaw adds raw client bytes to the transcript, a line at a time, keeping
// at most max lines (all if max < 0).
func (c *Client) logRaw(raw string, max int) {
	lines := 0
	for raw != "" {
		if max >= 0 && lines == max {
			c.note(fmt.Sprintf("%d more bytes", len(raw)))
			return
		}
		line, rest, crlf := strings.Cut(raw, "\r\n")
		if crlf && !strings.ContainsAny(line, "\r\n") && isPrintable(line) {
			c.log = append(c.log, "C: "+line)
		} else {
			if crlf {
				line += "\r\n"
			}
			c.log = append(c.log, "C: "+strconv.Quote(line))
		}
		raw = rest
		lines++
	}
}

func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// ReadReply reads one reply, whatever its code.
func (c *Client) ReadReply() Reply {
	c.t.Helper()
	r, err := c.readReply()
	if err != nil {
		c.fatalf("reading reply: %v", err)
	}
	return r
}

// Expect reads one reply and fails the test unless its code is code.
func (c *Client) Expect(code int) Reply {
	c.t.Helper()
	r := c.ReadReply()
	if r.Code != code {
		c.fatalf("want reply %d, got %q", code, r.String())
	}
	return r
}

// Cmd sends a command and expects a reply with code.
func (c *Client) Cmd(cmd string, code int) Reply {
	c.t.Helper()
	c.Send(cmd)
	return c.Expect(code)
}

// Do sends a command and returns its reply, whatever its code.
func (c *Client) Do(cmd string) Reply {
	c.t.Helper()
	c.Send(cmd)
	return c.ReadReply()
}

// Hello sends EHLO (LHLO when c.LMTP) and expects 250. On a Client from
// Server.Dial in ModeSTARTTLS it then upgrades with STARTTLS and says
// EHLO again. It returns the last EHLO reply; see Reply.Extension.
func (c *Client) Hello(name string) Reply {
	c.t.Helper()
	verb := "EHLO"
	if c.LMTP {
		verb = "LHLO"
	}
	r := c.Cmd(verb+" "+name, 250)
	if c.autoTLS != nil && c.ConnectionState() == nil {
		c.StartTLS(c.autoTLS)
		r = c.Cmd(verb+" "+name, 250)
	}
	return r
}

// StartTLS sends STARTTLS, expects 220 and performs the TLS handshake with
// cfg. It fails the test if the server sent anything after its 220 before
// the handshake (RFC 3207 5, the reverse of CVE-2011-0411). As RFC 3207
// 4.2 requires, the client must say EHLO again afterwards.
func (c *Client) StartTLS(cfg *tls.Config) {
	c.t.Helper()
	c.Cmd("STARTTLS", 220)
	if n := c.r.Buffered(); n > 0 {
		c.fatalf("server sent %d bytes in the clear after 220 to STARTTLS", n)
	}
	c.startTLS(cfg)
}

func (c *Client) startTLS(cfg *tls.Config) {
	c.t.Helper()
	tc := tls.Client(c.conn, cfg)
	tc.SetDeadline(time.Now().Add(c.timeout()))
	if err := tc.Handshake(); err != nil {
		c.fatalf("TLS handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.conn = tc
	c.r = bufio.NewReader(tc)
	c.note("TLS handshake done, " + tls.VersionName(tc.ConnectionState().Version))
}

// Data sends DATA, expects 354, sends body dot-stuffed and ended with
// CRLF.CRLF, and expects a final reply with code. body should use CRLF line
// endings; bare CR and LF are sent as they are (for smuggling tests), and a
// missing final CRLF is added. In LMTP the server sends one reply per
// accepted recipient: Data reads the first, read the others with Expect.
func (c *Client) Data(body string, code int) Reply {
	c.t.Helper()
	c.Cmd("DATA", 354)
	stuffed := dotStuff(body)
	c.logRaw(stuffed, transcriptBodyLines)
	c.write(stuffed)
	return c.Expect(code)
}

// BDAT sends one chunk with BDAT (RFC 3030), with LAST when last is set,
// and expects a reply with code.
func (c *Client) BDAT(chunk string, last bool, code int) Reply {
	c.t.Helper()
	cmd := "BDAT " + strconv.Itoa(len(chunk))
	if last {
		cmd += " LAST"
	}
	c.log = append(c.log, "C: "+cmd)
	c.note(fmt.Sprintf("%d bytes of chunk", len(chunk)))
	c.write(cmd + "\r\n" + chunk)
	return c.Expect(code)
}

// ExpectClosed fails the test unless the server closes the connection
// before sending anything more; then it closes the client's side too.
func (c *Client) ExpectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(c.timeout()))
	line, err := c.r.ReadString('\n')
	switch {
	case line != "":
		c.log = append(c.log, "S: "+strconv.Quote(line))
		c.fatalf("want the connection closed, got %q", line)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		c.note("connection closed by server")
		c.Close()
	default:
		c.fatalf("want the connection closed: %v", err)
	}
}

// SendMail runs a whole transaction on a fresh connection: greeting, Hello
// (with STARTTLS on a Client from Server.Dial in ModeSTARTTLS), MAIL, one
// RCPT per recipient, DATA with msg, QUIT. It returns nil if the message
// was accepted and otherwise the *smtp.Error of the first reply that
// refused it (in LMTP, of the first recipient refused). Network and
// protocol failures fail the test.
func (c *Client) SendMail(from string, to []string, msg []byte) error {
	c.t.Helper()
	defer c.Close()
	if r := c.ReadReply(); r.Code != 220 {
		return c.refused(r)
	}
	verb := "EHLO"
	if c.LMTP {
		verb = "LHLO"
	}
	name := c.HelloName
	if name == "" {
		name = "localhost"
	}
	r := c.Do(verb + " " + name)
	if r.Code != 250 {
		return c.refused(r)
	}
	if c.autoTLS != nil && c.ConnectionState() == nil {
		if r := c.Do("STARTTLS"); r.Code != 220 {
			return c.refused(r)
		}
		c.startTLS(c.autoTLS)
		if r := c.Do(verb + " " + name); r.Code != 250 {
			return c.refused(r)
		}
	}
	if r := c.Do("MAIL FROM:<" + from + ">"); r.Code != 250 {
		return c.refused(r)
	}
	for _, rcpt := range to {
		if r := c.Do("RCPT TO:<" + rcpt + ">"); r.Code != 250 && r.Code != 251 {
			return c.refused(r)
		}
	}
	if r := c.Do("DATA"); r.Code != 354 {
		return c.refused(r)
	}
	stuffed := dotStuff(string(msg))
	c.logRaw(stuffed, transcriptBodyLines)
	c.write(stuffed)
	n := 1
	if c.LMTP {
		n = len(to)
	}
	var first error
	for range n {
		if r := c.ReadReply(); r.Code != 250 && first == nil {
			first = replyError(r)
		}
	}
	c.Do("QUIT")
	return first
}

// refused ends a failed SendMail politely and returns the reply's error.
func (c *Client) refused(r Reply) error {
	c.t.Helper()
	if r.Code != 421 {
		c.Do("QUIT")
	}
	return replyError(r)
}

func replyError(r Reply) error {
	if e := r.Err(); e != nil {
		return e
	}
	return fmt.Errorf("smtptest: unexpected reply %q", r.String())
}

// SendMail dials addr and sends one message with Client.SendMail.
func SendMail(t testing.TB, addr, from string, to []string, msg []byte) error {
	t = orPanicTB(t)
	t.Helper()
	return Dial(t, addr).SendMail(from, to, msg)
}

// dotStuff prepares a body for DATA (RFC 5321 4.5.2): a line starting with
// "." gets another, the body ends with CRLF, then "." CRLF.
func dotStuff(body string) string {
	var b strings.Builder
	b.Grow(len(body) + len(body)/64 + 5)
	start := true
	for i := 0; i < len(body); i++ {
		if start && body[i] == '.' {
			b.WriteByte('.')
		}
		b.WriteByte(body[i])
		start = body[i] == '\n' && i > 0 && body[i-1] == '\r'
	}
	if body != "" && !strings.HasSuffix(body, "\r\n") {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.String()
}

// readReply reads the lines of one reply (RFC 5321 4.2.1): "code-text" for
// each line but the last, "code text" (or a bare "code") for the last.
func (c *Client) readReply() (Reply, error) {
	c.conn.SetReadDeadline(time.Now().Add(c.timeout()))
	var r Reply
	for {
		line, err := c.readLine()
		if err != nil {
			return r, err
		}
		if len(line) < 3 || !isDigits(line[:3]) || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
			return r, fmt.Errorf("malformed reply line %q", line)
		}
		code, _ := strconv.Atoi(line[:3])
		if r.Code != 0 && code != r.Code {
			return r, fmt.Errorf("reply code changed from %d to %d within a reply", r.Code, code)
		}
		r.Code = code
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		r.Lines = append(r.Lines, text)
		if len(line) == 3 || line[3] == ' ' {
			break
		}
	}
	// RFC 2034 3: the enhanced code starts the text of every line, and its
	// class is the reply's first digit.
	if class := r.Code / 100; class == 2 || class == 4 || class == 5 {
		if enh, _, ok := smtp.ParseEnhancedCode(r.Lines[0]); ok && enh[0] == class {
			r.Enhanced = enh
			prefix := enh.String()
			for i, l := range r.Lines {
				if rest, ok := strings.CutPrefix(l, prefix); ok && (rest == "" || rest[0] == ' ') {
					r.Lines[i] = strings.TrimPrefix(rest, " ")
				}
			}
		}
	}
	return r, nil
}

func (c *Client) readLine() (string, error) {
	var line []byte
	for {
		frag, err := c.r.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > maxReplyLine {
			return "", fmt.Errorf("reply line longer than %d bytes", maxReplyLine)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if len(line) > 0 {
				c.log = append(c.log, "S: "+strconv.Quote(string(line)))
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		break
	}
	s := string(line)
	if !strings.HasSuffix(s, "\r\n") || strings.ContainsAny(s[:len(s)-2], "\r\n") {
		c.log = append(c.log, "S: "+strconv.Quote(s))
		return "", fmt.Errorf("reply line %q does not end in CRLF", s)
	}
	s = s[:len(s)-2]
	c.log = append(c.log, "S: "+s)
	return s, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

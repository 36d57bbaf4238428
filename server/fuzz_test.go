package server

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/smtp"
)

// fuzzHandler accepts everything, reads every body, and offers AUTH, VRFY
// and per-recipient LMTP results, so that the fuzzer reaches every path.
type fuzzHandler struct{}

func (fuzzHandler) NewSession(ctx context.Context, c *Conn) (Session, error) {
	return &fuzzSession{}, nil
}

type fuzzSession struct{}

func (*fuzzSession) Mail(ctx context.Context, from smtp.Address, o *smtp.MailOptions) error {
	return nil
}
func (*fuzzSession) Rcpt(ctx context.Context, to smtp.Address, o *smtp.RcptOptions) error {
	if to.Local == "reject" {
		return smtp.NoSuchUser()
	}
	return nil
}
func (*fuzzSession) Data(ctx context.Context, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (*fuzzSession) Reset(ctx context.Context)            {}
func (*fuzzSession) Close(ctx context.Context, err error) {}
func (*fuzzSession) AuthPassword(ctx context.Context, identity, user, pass string) error {
	if user == "user" && pass == "secret" {
		return nil
	}
	return ErrAuthFailed
}
func (*fuzzSession) Verify(ctx context.Context, arg string) (string, error) { return arg, nil }
func (*fuzzSession) Expand(ctx context.Context, arg string) ([]string, error) {
	return []string{arg}, nil
}
func (*fuzzSession) LMTPData(ctx context.Context, r io.Reader, st *LMTPStatus) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// fuzzServers are one SMTP and one LMTP server on loopback, shared by all
// the inputs of a fuzzing run.
var fuzzServers = sync.OnceValue(func() [2]string {
	var addrs [2]string
	for i, lmtp := range []bool{false, true} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		srv := &Server{Handler: fuzzHandler{}, Hostname: "mx.test", Logger: discardLogger, LMTP: lmtp,
			AllowInsecureAuth: true, MaxConnections: -1, MaxConnectionsPerIP: -1,
			MaxMessageBytes: 64 << 10, ReadTimeout: 5 * time.Second, DataTimeout: 5 * time.Second}
		go srv.Serve(l)
		addrs[i] = l.Addr().String()
	}
	return addrs
})

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9]([ -][^\r\n]*)?\r\n$`)

// FuzzSession sends arbitrary input as a client and checks the server's
// side of the contract: whatever comes, it answers only with well-formed
// reply lines, ends the session when the input ends (no hang), and does not
// crash (a panic would end the fuzzing process).
func FuzzSession(f *testing.F) {
	seeds := []string{
		"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n",
		"EHLO c.test\r\nMAIL FROM:<a@b.test> SIZE=100 BODY=BINARYMIME\r\nRCPT TO:<c@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.test\r\nBDAT 5\r\nhelloBDAT 0 LAST\r\nQUIT\r\n",
		"EHLO c.test\r\nAUTH PLAIN AHVzZXIAc2VjcmV0\r\nAUTH LOGIN\r\ndXNlcg==\r\n*\r\nQUIT\r\n",
		"HELO c.test\r\nVRFY someone\r\nEXPN list\r\nHELP\r\nNOOP\r\nRSET\r\nQUIT\r\n",
		"LHLO c.test\r\nMAIL FROM:<>\r\nRCPT TO:<reject@d.test>\r\nRCPT TO:<\"quoted local\"@[IPv6:::1]>\r\nDATA\r\n..dot\r\n\n.\n\r\n.\r\n",
		"EHLO c.test\r\nMAIL FROM:<a@b.test> SMTPUTF8\r\nRCPT TO:<ü@ü.test>\r\nDATA\r\nx\r.\r\n.\r\n",
		"\x00\xff\r\nEHLO\r\nSTARTTLS\r\nMAIL FROM:<@route,@r2:a@b.test>\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, lmtp bool) {
		addr := fuzzServers()[0]
		if lmtp {
			addr = fuzzServers()[1]
		}
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		go func() {
			c.Write(in)
			c.(*net.TCPConn).CloseWrite() // the client is done: the session must end
		}()
		r := bufio.NewReader(c)
		var out bytes.Buffer
		for {
			line, err := r.ReadString('\n')
			out.WriteString(line)
			if line != "" && !replyLine.MatchString(line) {
				t.Fatalf("input %q: the server sent %q, not a reply line; all it sent:\n%s", in, line, out.String())
			}
			if err == io.EOF {
				if !bytes.HasPrefix(out.Bytes(), []byte("220 mx.test ")) {
					t.Fatalf("input %q: no greeting; the server sent:\n%s", in, out.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("input %q: %v (a hang?); the server sent:\n%s", in, err, out.String())
			}
		}
	})
}

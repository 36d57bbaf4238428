package e2e

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
)

// swaks runs swaks against addr with args and returns its transcript.
func swaks(t *testing.T, addr string, args ...string) peerResult {
	t.Helper()
	bin := tool(t, "swaks")
	return runPeer(t, nil, bin, append([]string{"--server", addr, "--helo", "client.example", "--timeout", "60"}, args...)...)
}

// swaksSent rebuilds, from a swaks transcript, the message it sent: the
// lines after the 354 reply, up to the "." line, without dot-stuffing.
// Lines swaks sent are shown as " -> line", or " ~> line" under TLS.
func swaksSent(t *testing.T, transcript string) []byte {
	t.Helper()
	var b bytes.Buffer
	inData := false
	for _, l := range strings.Split(transcript, "\n") {
		l = strings.TrimSuffix(l, "\r")
		if !inData {
			inData = strings.HasPrefix(l, "<-  354 ") || strings.HasPrefix(l, "<~  354 ")
			continue
		}
		s, ok := strings.CutPrefix(l, " -> ")
		if !ok {
			s, ok = strings.CutPrefix(l, " ~> ")
		}
		if !ok {
			t.Fatalf("swaks transcript: unexpected line in DATA: %q", l)
		}
		if s == "." {
			return b.Bytes()
		}
		b.WriteString(strings.TrimPrefix(s, ".")) // RFC 5321 4.5.2
		b.WriteString("\r\n")
	}
	t.Fatalf("swaks transcript has no complete DATA section")
	return nil
}

func TestSwaksPipelining(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{})
	msg := testMessage("swaks-pipeline")
	r := swaks(t, d.SMTP, "--pipeline", "--from", "a@example.com", "--to", "b@example.com,c@example.com",
		"--data", "@"+writeFile(t, "msg.eml", msg))
	if r.Code != 0 {
		t.Fatalf("swaks exited %d", r.Code)
	}
	// With PIPELINING, MAIL, both RCPTs and DATA go out before any reply
	// (RFC 2920 3.1), and the replies come back in order.
	batch := regexp.MustCompile(`(?m)^ -> MAIL FROM:<a@example\.com>\r?\n -> RCPT TO:<b@example\.com>\r?\n -> RCPT TO:<c@example\.com>\r?\n -> DATA\r?\n` +
		`<-  250 2\.1\.0 [^\n]*\n<-  250 2\.1\.5 [^\n]*\n<-  250 2\.1\.5 [^\n]*\n<-  354 `)
	if !batch.MatchString(r.Stdout) {
		t.Errorf("transcript does not show the pipelined batch and its in-order replies")
	}
	sent := swaksSent(t, r.Stdout)
	if !bytes.HasPrefix(sent, msg) {
		t.Errorf("swaks did not send our message unchanged:\n%q", sent)
	}
	files := d.waitMessages(1)
	d.check(files[0], sent, `^Received: from client\.example \(\[127\.0\.0\.1\]\)`, ` with ESMTP id `)
}

func TestSwaksStartTLSAuth(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{StartTLS: true, Users: true})
	sentBy := map[string][]byte{} // what swaks sent, by mechanism
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		t.Run(mech, func(t *testing.T) {
			msg := testMessage("swaks-tls-" + mech)
			r := swaks(t, d.SMTP, "--tls", "--auth", mech, "--auth-user", testUser, "--auth-password", testPassword,
				"--from", "a@example.com", "--to", "b@example.com", "--data", "@"+writeFile(t, "msg.eml", msg))
			if r.Code != 0 {
				t.Fatalf("swaks exited %d", r.Code)
			}
			for _, want := range []string{"<-  220 2.0.0 ", "<~  235 2.7.0 ", "<~  250 2.0.0 OK"} {
				if !strings.Contains(r.Stdout, want) {
					t.Errorf("transcript lacks %q", want)
				}
			}
			sent := swaksSent(t, r.Stdout)
			if !bytes.HasPrefix(sent, msg) {
				t.Errorf("swaks did not send our message unchanged:\n%q", sent)
			}
			sentBy[mech] = sent
		})
	}
	t.Run("wrong-password", func(t *testing.T) {
		r := swaks(t, d.SMTP, "--tls", "--auth", "PLAIN", "--auth-user", testUser, "--auth-password", wrongPassword,
			"--from", "a@example.com", "--to", "b@example.com")
		if r.Code == 0 {
			t.Errorf("swaks succeeded with a wrong password")
		}
		if !strings.Contains(r.Stdout, "<~* 535 5.7.8 ") {
			t.Errorf("transcript lacks the 535 5.7.8 reply")
		}
		if strings.Contains(r.Stdout, "MAIL FROM") {
			t.Errorf("swaks went on to MAIL after a failed AUTH")
		}
	})
	// Each good run delivered exactly what swaks says it sent.
	files := d.waitMessages(len(sentBy))
	for _, f := range files {
		b := readFile(t, f)
		matched := false
		for mech, m := range sentBy {
			if bytes.HasSuffix(b, m) {
				d.check(f, m, ` with ESMTPSA id `, `\(version=TLS 1\.[23] cipher=\w+\)`)
				delete(sentBy, mech)
				matched = true
				break
			}
		}
		if !matched {
			t.Errorf("%s is not a message swaks sent:\n%q", f, head(b, 400))
		}
	}
}

func TestSwaksAuthNeedsTLS(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{StartTLS: true, Users: true})
	// Without TLS the server does not offer AUTH, so swaks, told to
	// authenticate, gives up before MAIL. (The 538 a client gets when it
	// sends AUTH anyway is TestSmtplibAuthNeedsTLS.)
	r := swaks(t, d.SMTP, "--auth", "PLAIN", "--auth-user", testUser, "--auth-password", testPassword,
		"--from", "a@example.com", "--to", "b@example.com")
	if r.Code == 0 {
		t.Errorf("swaks authenticated without TLS")
	}
	if strings.Contains(r.Stdout, "250-AUTH") || strings.Contains(r.Stdout, "250 AUTH") {
		t.Errorf("AUTH advertised without TLS")
	}
	if !strings.Contains(r.Output(), "advertise") {
		t.Errorf("swaks does not say AUTH was not advertised")
	}
	d.noMessages()

	// --insecure-auth is the operator's explicit opt-out.
	d2 := startDaemon(t, daemonOptions{Users: true, Args: []string{"--insecure-auth"}})
	msg := testMessage("swaks-insecure-auth")
	r = swaks(t, d2.SMTP, "--auth", "LOGIN", "--auth-user", testUser, "--auth-password", testPassword,
		"--from", "a@example.com", "--to", "b@example.com", "--data", "@"+writeFile(t, "msg.eml", msg))
	if r.Code != 0 {
		t.Fatalf("swaks exited %d", r.Code)
	}
	files := d2.waitMessages(1)
	d2.check(files[0], swaksSent(t, r.Stdout), ` with ESMTPA id `)
}

func TestSwaksQuitAfterRCPT(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{})
	r := swaks(t, d.SMTP, "--quit-after", "RCPT", "--from", "a@example.com", "--to", "b@example.com")
	if r.Code != 0 {
		t.Fatalf("swaks exited %d", r.Code)
	}
	if !strings.Contains(r.Stdout, "<-  250 2.1.5 ") || !strings.Contains(r.Stdout, "<-  221 2.0.0 ") {
		t.Errorf("transcript lacks the RCPT 250 or the QUIT 221")
	}
	d.waitLog(`msg=session .* messages=0 .*outcome=quit`)
	d.noMessages()
	if tmp := listDir(t, d.Data+"/maildir/tmp"); len(tmp) > 0 {
		t.Errorf("maildir/tmp: %v", tmp)
	}
}

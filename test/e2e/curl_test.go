package e2e

import (
	"strings"
	"testing"
)

func curl(t *testing.T, stdin []byte, args ...string) peerResult {
	t.Helper()
	bin := tool(t, "curl")
	return runPeer(t, stdin, bin, append([]string{"--silent", "--show-error", "--verbose", "--max-time", "60"}, args...)...)
}

func TestCurlUpload(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{})
	msg := testMessage("curl-upload")
	// The path of the URL is the EHLO name.
	r := curl(t, nil, "smtp://"+d.SMTP+"/client.example",
		"--mail-from", "a@example.com", "--mail-rcpt", "b@example.com", "--mail-rcpt", "c@example.com",
		"-T", writeFile(t, "msg.eml", msg))
	if r.Code != 0 {
		t.Fatalf("curl exited %d", r.Code)
	}
	if !strings.Contains(r.Stderr, "< 250 2.0.0 OK") {
		t.Errorf("curl's transcript lacks the final 250")
	}
	files := d.waitMessages(1)
	hdr := d.check(files[0], msg, `^Received: from client\.example \(\[127\.0\.0\.1\]\)`, ` with ESMTP id `)
	if strings.Contains(hdr, "\tfor <") {
		t.Errorf("Received names one of two recipients (a Bcc leak):\n%s", hdr)
	}
}

func TestCurlStartTLS(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{StartTLS: true, Users: true})
	msg := testMessage("curl-starttls")
	r := curl(t, nil, "smtp://"+d.SMTP+"/client.example", "--ssl-reqd", "-k",
		"--user", testUser+":"+testPassword,
		"--mail-from", "a@example.com", "--mail-rcpt", "b@example.com",
		"-T", writeFile(t, "msg.eml", msg))
	if r.Code != 0 {
		t.Fatalf("curl exited %d", r.Code)
	}
	for _, want := range []string{"> STARTTLS", "< 220 2.0.0 ", "< 235 2.7.0 ", "< 250 2.0.0 OK"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("curl's transcript lacks %q", want)
		}
	}
	files := d.waitMessages(1)
	d.check(files[0], msg, ` with ESMTPSA id `, `\(version=TLS 1\.[23] cipher=\w+\)`, `\tfor <b@example\.com>; `)
}

func TestCurlImplicitTLS(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{ImplicitTLS: true})
	msg := testMessage("curl-smtps")
	r := curl(t, nil, "smtps://"+d.SMTPS+"/client.example", "--cacert", certFile,
		"--mail-from", "a@example.com", "--mail-rcpt", "b@example.com",
		"-T", writeFile(t, "msg.eml", msg))
	if r.Code != 0 {
		t.Fatalf("curl exited %d", r.Code)
	}
	files := d.waitMessages(1)
	d.check(files[0], msg, ` with ESMTPS id `, `\(version=TLS 1\.[23] cipher=\w+\)`)
}

package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const wrongPassword = "not-the-password-Zq9"

// pyResult is what testdata/smtplib_client.py prints.
type pyResult struct {
	Features          []string             `json:"features"`
	FeaturesBeforeTLS []string             `json:"features_before_tls"`
	TLSVersion        string               `json:"tls_version"`
	Refused           map[string]pyReply   `json:"refused"`
	Replies           map[string]pyReply   `json:"replies"`
	Lists             map[string][]pyReply `json:"-"`
}

// pyReply is a [code, text] pair.
type pyReply struct {
	Code int
	Text string
}

func (r *pyReply) UnmarshalJSON(b []byte) error {
	var v [2]any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	f, _ := v[0].(float64)
	r.Code = int(f)
	r.Text, _ = v[1].(string)
	return nil
}

func (r pyReply) String() string { return strconv.Itoa(r.Code) + " " + r.Text }

// smtplib runs testdata/smtplib_client.py with spec.
func smtplib(t *testing.T, spec map[string]any) pyResult {
	t.Helper()
	py := tool(t, "/usr/bin/python3")
	script, err := filepath.Abs("testdata/smtplib_client.py")
	if err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	r := runPeer(t, nil, py, script, string(js))
	if r.Code != 0 {
		t.Fatalf("smtplib client failed (exit %d):\n%s", r.Code, r.Stderr)
	}
	// "rcpt" and "data" are lists for LMTP; decode them apart.
	var raw struct {
		pyResult
		Replies map[string]json.RawMessage `json:"replies"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &raw); err != nil {
		t.Fatalf("smtplib client output: %v\n%s", err, r.Stdout)
	}
	res := raw.pyResult
	res.Replies, res.Lists = map[string]pyReply{}, map[string][]pyReply{}
	for k, v := range raw.Replies {
		var one pyReply
		if err := json.Unmarshal(v, &one); err == nil && one.Code != 0 {
			res.Replies[k] = one
			continue
		}
		var many []pyReply
		if err := json.Unmarshal(v, &many); err != nil {
			t.Fatalf("reply %s: %v: %s", k, err, v)
		}
		res.Lists[k] = many
	}
	return res
}

// wantReply asserts that step got a reply starting with prefix (a code and
// maybe an enhanced code).
func (r pyResult) wantReply(t *testing.T, step, prefix string) {
	t.Helper()
	got, ok := r.Replies[step]
	if !ok {
		t.Errorf("no reply to %s", step)
		return
	}
	if !strings.HasPrefix(got.String(), prefix) {
		t.Errorf("%s: got %q, want %q", step, got, prefix)
	}
}

func spec(addr string, kv ...any) map[string]any {
	h, p, _ := strings.Cut(addr, ":")
	m := map[string]any{"host": h, "port": p}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func TestSmtplibPlain(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{})
	msg := testMessage("smtplib-plain")
	res := smtplib(t, spec(d.SMTP,
		"from", "a@example.com", "to", []string{"b@example.com"},
		"message", writeFile(t, "msg.eml", msg), "mail_options", []string{"BODY=8BITMIME"}))
	for _, f := range []string{"pipelining", "8bitmime", "smtputf8", "enhancedstatuscodes", "size", "chunking"} {
		if !slices.Contains(res.Features, f) {
			t.Errorf("EHLO lacks %s: %v", f, res.Features)
		}
	}
	for _, f := range []string{"starttls", "auth"} {
		if slices.Contains(res.Features, f) {
			t.Errorf("EHLO offers %s without a certificate or users: %v", f, res.Features)
		}
	}
	if len(res.Refused) != 0 {
		t.Errorf("refused: %v", res.Refused)
	}
	res.wantReply(t, "quit", "221 2.0.0")
	files := d.waitMessages(1)
	d.check(files[0], msg,
		`^Received: from client\.example \(\[127\.0\.0\.1\]\)\r\n`,
		` with ESMTP id `, `\tfor <b@example\.com>; `)
}

func TestSmtplibStartTLSAuth(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{StartTLS: true, Users: true})
	for _, tc := range []struct {
		name, mech string
		ir         bool
	}{
		{"PLAIN", "PLAIN", true},
		{"LOGIN-initial-response", "LOGIN", true},
		{"LOGIN-challenges", "LOGIN", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := testMessage("smtplib-starttls-" + tc.name)
			res := smtplib(t, spec(d.SMTP, "starttls", true, "cafile", certFile,
				"user", testUser, "password", testPassword, "mech", tc.mech, "ir", tc.ir,
				"from", "a@example.com", "to", []string{"b@example.com"},
				"message", writeFile(t, "msg.eml", msg)))
			if !slices.Contains(res.FeaturesBeforeTLS, "starttls") || slices.Contains(res.FeaturesBeforeTLS, "auth") {
				t.Errorf("EHLO before TLS: %v, want STARTTLS and no AUTH", res.FeaturesBeforeTLS)
			}
			if slices.Contains(res.Features, "starttls") || !slices.Contains(res.Features, "auth") {
				t.Errorf("EHLO after TLS: %v, want AUTH and no STARTTLS", res.Features)
			}
			res.wantReply(t, "starttls", "220 ")
			res.wantReply(t, "auth", "235 2.7.0")
			res.wantReply(t, "quit", "221 ")
			if res.TLSVersion != "TLSv1.3" && res.TLSVersion != "TLSv1.2" {
				t.Errorf("TLS version %q", res.TLSVersion)
			}
		})
	}
	t.Run("wrong-password", func(t *testing.T) {
		res := smtplib(t, spec(d.SMTP, "starttls", true, "cafile", certFile,
			"user", testUser, "password", wrongPassword, "mech", "PLAIN"))
		res.wantReply(t, "auth", "535 5.7.8")
	})
	t.Run("unknown-user", func(t *testing.T) {
		res := smtplib(t, spec(d.SMTP, "starttls", true, "cafile", certFile,
			"user", "mallory", "password", testPassword, "mech", "LOGIN"))
		res.wantReply(t, "auth", "535 5.7.8")
	})
	files := d.waitMessages(3)
	for _, hdr := range checkEach(t, files, "smtplib-starttls-PLAIN", "smtplib-starttls-LOGIN-initial-response", "smtplib-starttls-LOGIN-challenges") {
		for _, re := range []string{` with ESMTPSA id `, `\r\n\t\(version=TLS 1\.[23] cipher=\w+\)\r\n`, `\tby ` + regexp.QuoteMeta(hostname) + ` `} {
			if !regexp.MustCompile(re).MatchString(hdr) {
				t.Errorf("Received header does not match %q:\n%s", re, hdr)
			}
		}
	}
	if n := len(d.logLines(`msg="auth failed".*user=` + testUser)); n != 1 {
		t.Errorf("%d \"auth failed\" log lines for %s, want 1", n, testUser)
	}
	if log := d.log.String(); strings.Contains(log, wrongPassword) || strings.Contains(log, testPassword) {
		t.Errorf("a password is in the log")
	}
}

func TestSmtplibAuthNeedsTLS(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{StartTLS: true, Users: true})
	// AUTH PLAIN with alice's credentials, in the clear: RFC 4954 4 and
	// RFC 8314: 538 5.7.11, and the credentials are never checked.
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00" + testPassword))
	res := smtplib(t, spec(d.SMTP, "raw_auth", "AUTH PLAIN "+ir))
	if slices.Contains(res.Features, "auth") {
		t.Errorf("AUTH offered before TLS: %v", res.Features)
	}
	res.wantReply(t, "auth", "538 5.7.11")
	res.wantReply(t, "quit", "221 ")
}

func TestSmtplibImplicitTLS(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{ImplicitTLS: true, Users: true})
	msg := testMessage("smtplib-ssl")
	res := smtplib(t, spec(d.SMTPS, "mode", "ssl", "cafile", certFile,
		"user", testUser, "password", testPassword, "mech", "PLAIN",
		"from", "a@example.com", "to", []string{"b@example.com", "c@example.com"},
		"message", writeFile(t, "msg.eml", msg)))
	if slices.Contains(res.Features, "starttls") {
		t.Errorf("STARTTLS offered on an implicit-TLS connection: %v", res.Features)
	}
	res.wantReply(t, "auth", "235 2.7.0")
	files := d.waitMessages(1)
	hdr := d.check(files[0], msg, ` with ESMTPSA id `, `\(version=TLS 1\.[23] cipher=\w+\)`)
	if strings.Contains(hdr, "\tfor <") {
		t.Errorf("Received names a recipient of a two-recipient message (Bcc leak):\n%s", hdr)
	}
}

func TestSmtplibSMTPUTF8(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{})
	msg := []byte("From: 发件人 <发件人@例子.测试>\r\n" +
		"To: 用户 <用户@例子.测试>\r\n" +
		"Subject: Grüße 🌍\r\n" +
		"Message-ID: <utf8@example.com>\r\n" +
		"\r\n" +
		".点\r\n" +
		"Ünïcödé body\r\n")
	res := smtplib(t, spec(d.SMTP,
		"from", "发件人@例子.测试", "to", []string{"用户@例子.测试"},
		"message", writeFile(t, "msg.eml", msg), "mail_options", []string{"SMTPUTF8", "BODY=8BITMIME"},
		"utf8_without_smtputf8", true))
	if !slices.Contains(res.Features, "smtputf8") {
		t.Errorf("EHLO lacks SMTPUTF8: %v", res.Features)
	}
	res.wantReply(t, "mail_no_smtputf8", "553 5.6.7")
	res.wantReply(t, "mail_ascii", "250 ")
	res.wantReply(t, "rcpt_no_smtputf8", "553 5.6.7")
	files := d.waitMessages(1)
	d.check(files[0], msg, ` with UTF8SMTP id `, `\tfor <用户@例子\.测试>; `)
}

func TestSmtplibLMTP(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, daemonOptions{LMTP: true})
	msg := testMessage("smtplib-lmtp")
	res := smtplib(t, spec(d.LMTP, "mode", "lmtp",
		"from", "a@example.com",
		// The third is a UTF-8 address without SMTPUTF8: refused at RCPT,
		// so it gets no reply after DATA.
		"to", []string{"b@example.com", "c@example.com", "用户@例子.测试", "d@example.com"},
		"message", writeFile(t, "msg.eml", msg), "mail_options", []string{"BODY=8BITMIME"}))
	res.wantReply(t, "ehlo", "250 ") // to LHLO
	rcpt := res.Lists["rcpt"]
	var codes []int
	for _, r := range rcpt {
		codes = append(codes, r.Code)
	}
	if !slices.Equal(codes, []int{250, 250, 553, 250}) {
		t.Errorf("RCPT replies %v, want 250 250 553 250", rcpt)
	}
	data := res.Lists["data"]
	if len(data) != 3 {
		t.Fatalf("%d replies after DATA, want 3 (one per accepted recipient): %v", len(data), data)
	}
	for i, r := range data {
		if !strings.HasPrefix(r.String(), "250 2.0.0") {
			t.Errorf("DATA reply %d: %q, want 250 2.0.0", i, r)
		}
	}
	res.wantReply(t, "quit", "221 ") // proves the replies did not run ahead of the commands
	files := d.waitMessages(1)
	hdr := d.check(files[0], msg, `^Received: from client\.example \(\[127\.0\.0\.1\]\)`, ` with LMTP id `)
	if strings.Contains(hdr, "\tfor <") {
		t.Errorf("Received names one of several recipients:\n%s", hdr)
	}
}

// checkEach checks that files hold the test messages tagged tags, one
// each, in any order, and returns their Received headers.
func checkEach(t *testing.T, files []string, tags ...string) []string {
	t.Helper()
	left := slices.Clone(tags)
	var hdrs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(left, func(tag string) bool { return bytes.HasSuffix(b, testMessage(tag)) })
		if i < 0 {
			t.Errorf("%s is none of the messages %v:\n%q", filepath.Base(f), left, head(b, 400))
			continue
		}
		hdrs = append(hdrs, checkMessage(t, f, testMessage(left[i])))
		left = slices.Delete(left, i, i+1)
	}
	return hdrs
}

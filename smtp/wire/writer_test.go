package wire

import (
	"bytes"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

type countingWriter struct {
	bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes++
	return c.Buffer.Write(p)
}

func TestReply(t *testing.T) {
	enh := smtp.EnhancedCode{2, 1, 0}
	tests := []struct {
		name     string
		enhanced bool
		code     int
		enh      smtp.EnhancedCode
		text     string
		want     string
	}{
		{"plain", false, 250, enh, "OK", "250 OK\r\n"},
		{"enhanced", true, 250, enh, "OK", "250 2.1.0 OK\r\n"},
		{"zero enhanced code", true, 250, smtp.EnhancedCode{}, "OK", "250 OK\r\n"},
		{"greeting", true, 220, smtp.EnhancedCode{}, "mx.example ESMTP", "220 mx.example ESMTP\r\n"},
		{"multi-line", true, 550, smtp.EnhancedCode{5, 7, 1}, "Rejected\nSee https://x.example\nBye",
			"550-5.7.1 Rejected\r\n550-5.7.1 See https://x.example\r\n550 5.7.1 Bye\r\n"},
		{"multi-line plain", false, 250, enh, "a\nb", "250-a\r\n250 b\r\n"},
		{"CRLF in text", true, 451, smtp.EnhancedCode{4, 3, 0}, "a\r\nb", "451-4.3.0 a\r\n451 4.3.0 b\r\n"},
		{"354 never", true, 354, smtp.EnhancedCode{2, 0, 0}, "Go ahead", "354 Go ahead\r\n"},
		// RFC 4954 4: a 334 carries a base64 challenge and nothing else.
		{"334 never", true, 334, smtp.EnhancedCode{2, 0, 0}, "VXNlcm5hbWU6", "334 VXNlcm5hbWU6\r\n"},
		{"334 empty", true, 334, smtp.EnhancedCode{}, "", "334 \r\n"},
		{"1xx never", true, 199, smtp.EnhancedCode{2, 0, 0}, "x", "199 x\r\n"},
		{"empty text", true, 250, enh, "", "250 2.1.0\r\n"},
		{"4xx", true, 421, smtp.EnhancedCode{4, 7, 0}, "Bye", "421 4.7.0 Bye\r\n"},
		{"control chars replaced", true, 550, smtp.EnhancedCode{5, 0, 0}, "a\rb\x00c\x7fd\te", "550 5.0.0 a b c d e\r\n"},
		{"injection attempt", false, 250, enh, "OK\r250 forged", "250 OK 250 forged\r\n"},
		{"UTF-8 kept", false, 250, enh, "Grüße", "250 Grüße\r\n"},
	}
	for _, tt := range tests {
		var out countingWriter
		w := NewWriter(&out)
		w.Enhanced = tt.enhanced
		w.Reply(tt.code, tt.enh, tt.text)
		if out.Len() != 0 {
			t.Errorf("%s: wrote before Flush", tt.name)
		}
		if w.Buffered() != len(tt.want) {
			t.Errorf("%s: Buffered = %d, want %d", tt.name, w.Buffered(), len(tt.want))
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if out.String() != tt.want {
			t.Errorf("%s: wrote %q, want %q", tt.name, out.String(), tt.want)
		}
	}
}

// RFC 2920 3.2: a pipelined batch gets its replies in one write.
func TestReplyBatching(t *testing.T) {
	var out countingWriter
	w := NewWriter(&out)
	w.Enhanced = true
	w.Reply(250, smtp.EnhancedCode{2, 1, 0}, "OK")
	w.Reply(250, smtp.EnhancedCode{2, 1, 5}, "OK")
	w.ReplyError(smtp.NewError(550, smtp.EnhancedCode{5, 1, 1}, "No such user"))
	w.Reply(354, smtp.EnhancedCode{}, "Go ahead")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil { // nothing pending: no write at all
		t.Fatal(err)
	}
	want := "250 2.1.0 OK\r\n250 2.1.5 OK\r\n550 5.1.1 No such user\r\n354 Go ahead\r\n"
	if out.String() != want || out.writes != 1 {
		t.Errorf("%d writes of %q, want 1 of %q", out.writes, out.String(), want)
	}
}

func TestReplyLines(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	w.Enhanced = true // EHLO's reply carries no enhanced codes anyway
	w.ReplyLines(250, []string{"mx.example", "PIPELINING", "SIZE 10240000", "bad\r\nline"})
	w.ReplyLines(250, []string{"only"})
	w.ReplyLines(250, nil)
	w.Flush()
	want := "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 bad  line\r\n250 only\r\n250 \r\n"
	if out.String() != want {
		t.Errorf("wrote %q, want %q", out.String(), want)
	}
}

func TestWriterReset(t *testing.T) {
	var a, b bytes.Buffer
	w := NewWriter(&a)
	w.Reply(250, smtp.EnhancedCode{}, "lost")
	w.Reset(&b)
	w.Reply(220, smtp.EnhancedCode{}, "kept")
	w.Flush()
	if a.Len() != 0 || b.String() != "220 kept\r\n" {
		t.Errorf("a %q, b %q", a.String(), b.String())
	}
	if n, err := w.Raw([]byte("QUIT\r\n")); n != 6 || err != nil {
		t.Fatal(n, err)
	}
	w.Flush()
	if b.String() != "220 kept\r\nQUIT\r\n" {
		t.Errorf("b %q", b.String())
	}
}

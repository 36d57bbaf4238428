package dsn

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/smtp"
)

func TestWriteParses(t *testing.T) {
	orig := "From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody line\r\n"
	for _, headersOnly := range []bool{false, true} {
		r := &Report{
			ReportingMTA: "mx.test",
			To:           smtp.Address{Local: "a", Domain: "example.com"},
			EnvelopeID:   "env 1",
			ArrivalDate:  time.Date(2026, 11, 28, 1, 2, 3, 0, time.UTC),
			HeadersOnly:  headersOnly,
			Recipients: []Recipient{{
				Final: smtp.Address{Local: "b", Domain: "example.org"}, OriginalRecipientType: "rfc822", OriginalRecipient: "B@example.org",
				Action: Failed, Status: smtp.EnhancedCode{5, 1, 1}, RemoteMTA: "mx.example.org",
				Diagnostic: "550 5.1.1 No such user\r\nInjected: header", LastAttempt: time.Now(),
			}},
		}
		var buf bytes.Buffer
		if err := Write(&buf, r, strings.NewReader(orig)); err != nil {
			t.Fatal(err)
		}
		msg, err := mail.ReadMessage(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Header.Get("Injected") != "" {
			t.Fatal("diagnostic text injected a header")
		}
		mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
			t.Fatalf("content type %q %v %v", mt, params, err)
		}
		mr := multipart.NewReader(msg.Body, params["boundary"])
		var types []string
		var status, returned string
		for {
			part, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(part)
			ct := part.Header.Get("Content-Type")
			types = append(types, strings.Split(ct, ";")[0])
			switch {
			case ct == "message/delivery-status":
				status = string(b)
			case ct == "message/rfc822" || ct == "text/rfc822-headers":
				returned = string(b)
			}
		}
		want := []string{"text/plain", "message/delivery-status", "message/rfc822"}
		if headersOnly {
			want[2] = "text/rfc822-headers"
		}
		if strings.Join(types, ",") != strings.Join(want, ",") {
			t.Fatalf("parts %v, want %v", types, want)
		}
		// The per-message and per-recipient groups parse as header blocks.
		groups := strings.Split(strings.ReplaceAll(status, "\r\n", "\n"), "\n\n")
		perMsg, _ := textproto.NewReader(bufioReader(groups[0] + "\n\n")).ReadMIMEHeader()
		perRcpt, _ := textproto.NewReader(bufioReader(groups[1] + "\n\n")).ReadMIMEHeader()
		if perMsg.Get("Reporting-Mta") != "dns; mx.test" || perMsg.Get("Original-Envelope-Id") != "env+201" {
			t.Errorf("per-message fields: %v", perMsg)
		}
		if perRcpt.Get("Final-Recipient") != "rfc822; b@example.org" || perRcpt.Get("Action") != "failed" ||
			perRcpt.Get("Status") != "5.1.1" || perRcpt.Get("Original-Recipient") != "rfc822; B@example.org" ||
			!strings.HasPrefix(perRcpt.Get("Diagnostic-Code"), "smtp; 550 5.1.1 No such user") {
			t.Errorf("per-recipient fields: %v", perRcpt)
		}
		if headersOnly && strings.Contains(returned, "body line") || !headersOnly && !strings.Contains(returned, "body line") {
			t.Errorf("returned content (headersOnly=%v): %q", headersOnly, returned)
		}
	}
}

func TestWanted(t *testing.T) {
	for _, tc := range []struct {
		notify []smtp.DSNNotify
		a      Action
		want   bool
	}{
		{nil, Failed, true},
		{nil, Delivered, false},
		{[]smtp.DSNNotify{smtp.NotifyNever}, Failed, false},
		{[]smtp.DSNNotify{smtp.NotifySuccess}, Failed, false},
		{[]smtp.DSNNotify{smtp.NotifySuccess}, Delivered, true},
		{[]smtp.DSNNotify{smtp.NotifyFailure, smtp.NotifyDelay}, Delayed, true},
	} {
		if got := Wanted(tc.notify, tc.a); got != tc.want {
			t.Errorf("Wanted(%v, %s) = %v", tc.notify, tc.a, got)
		}
	}
}

package wire

import (
	"reflect"
	"strings"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

func TestReadReply(t *testing.T) {
	tests := []struct {
		in   string
		want Reply
		err  error
	}{
		{"220 mx.example ESMTP\r\n", Reply{Code: 220, Lines: []string{"mx.example ESMTP"}}, nil},
		{"250-mx.example\r\n250-PIPELINING\r\n250 SIZE 100\r\n", Reply{Code: 250, Lines: []string{"mx.example", "PIPELINING", "SIZE 100"}}, nil},
		{"250 2.1.0 OK\r\n", Reply{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 1, 0}, Lines: []string{"OK"}}, nil},
		{"550-5.7.1 a\r\n550 5.7.1 b\r\n", Reply{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Lines: []string{"a", "b"}}, nil},
		{"550 4.7.1 mismatched class\r\n", Reply{Code: 550, Lines: []string{"4.7.1 mismatched class"}}, nil},
		{"354 Go ahead\r\n", Reply{Code: 354, Lines: []string{"Go ahead"}}, nil},
		{"250\r\n", Reply{Code: 250, Lines: []string{""}}, nil},
		{"250 OK\n", Reply{Code: 250, Lines: []string{"OK"}}, nil},
		{"250-a\r\n251 b\r\n", Reply{}, ErrMalformedReply},
		{"25 OK\r\n", Reply{}, ErrMalformedReply},
		{"2500 OK\r\n", Reply{}, ErrMalformedReply},
		{"abc OK\r\n", Reply{}, ErrMalformedReply},
		{"150 OK\r\n", Reply{}, ErrMalformedReply},
		{"+25 OK\r\n", Reply{}, ErrMalformedReply},
		{strings.Repeat("250-x\r\n", 300) + "250 x\r\n", Reply{}, ErrMalformedReply},
	}
	for _, tt := range tests {
		br := NewReader(strings.NewReader(tt.in), CommandBufferSize)
		got, err := br.ReadReply(512)
		if err != tt.err {
			t.Errorf("ReadReply(%q) error = %v, want %v", tt.in, err, tt.err)
			continue
		}
		if err == nil && !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ReadReply(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestReplyErr(t *testing.T) {
	if (Reply{Code: 250}).Err() != nil || (Reply{Code: 354}).Err() != nil {
		t.Error("2xx/3xx are not errors")
	}
	e := Reply{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Lines: []string{"Too many", "recipients"}}.Err()
	if e == nil || e.Code != 452 || e.Message != "Too many\nrecipients" || !e.Temporary() {
		t.Errorf("Err() = %v", e)
	}
}

// What the server's Writer writes, the client's ReadReply reads back.
func TestWriterReadReplyRoundTrip(t *testing.T) {
	var sb strings.Builder
	w := NewWriter(&sb)
	w.Enhanced = true
	w.Reply(550, smtp.EnhancedCode{5, 1, 1}, "No such user\nTry another")
	w.Reply(334, smtp.EnhancedCode{}, "VXNlcm5hbWU6")
	w.Flush()
	br := NewReader(strings.NewReader(sb.String()), CommandBufferSize)
	r, err := br.ReadReply(512)
	if err != nil || r.Code != 550 || r.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) || r.Text() != "No such user\nTry another" {
		t.Errorf("got %+v, %v", r, err)
	}
	r, err = br.ReadReply(512)
	if err != nil || r.Code != 334 || r.Text() != "VXNlcm5hbWU6" {
		t.Errorf("got %+v, %v", r, err)
	}
}

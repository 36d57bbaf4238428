package smtp

import (
	"slices"
	"testing"
)

func TestParseNotify(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []DSNNotify // nil: error
	}{
		{"NEVER", []DSNNotify{NotifyNever}},
		{"never", []DSNNotify{NotifyNever}},
		{"SUCCESS", []DSNNotify{NotifySuccess}},
		{"FAILURE,DELAY", []DSNNotify{NotifyFailure, NotifyDelay}},
		{"success,Failure,DELAY", []DSNNotify{NotifySuccess, NotifyFailure, NotifyDelay}},
		{"", nil},
		{"NEVER,SUCCESS", nil},
		{"SUCCESS,NEVER", nil},
		{"SUCCESS,SUCCESS", nil},
		{"SUCCESS,", nil},
		{",SUCCESS", nil},
		{"SUCCESS FAILURE", nil},
		{"ALWAYS", nil},
	} {
		got, err := ParseNotify(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("ParseNotify(%q) = %v, want error", tt.in, got)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("ParseNotify(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestXtext(t *testing.T) {
	for _, tt := range []struct {
		enc, dec string
		bad      bool
	}{
		{enc: "", dec: ""},
		{enc: "user@example.com", dec: "user@example.com"},
		{enc: "a+2Bb", dec: "a+b"},
		{enc: "a+3Db", dec: "a=b"},
		{enc: "a+20b", dec: "a b"},
		{enc: "+00+7F+FF", dec: "\x00\x7f\xff"},
		{enc: "rfc822;joe+40x.org", dec: "rfc822;joe@x.org"},
		{enc: "+41", dec: "A"},  // needless but valid escape
		{enc: "+2b", bad: true}, // lower-case hex is not hexchar
		{enc: "+4", bad: true},  // truncated
		{enc: "a+", bad: true},  // truncated
		{enc: "+G0", bad: true}, // not hex
		{enc: "a=b", bad: true}, // '=' must be encoded
		{enc: "a b", bad: true}, // space must be encoded
		{enc: "a\x7fb", bad: true},
		{enc: "a\x00b", bad: true},
		{enc: "a+20\tb", bad: true},
		{enc: "\xc3\xa9", bad: true}, // xtext is ASCII
	} {
		got, err := DecodeXtext(tt.enc)
		if tt.bad {
			if err == nil {
				t.Errorf("DecodeXtext(%q) = %q, want error", tt.enc, got)
			}
			continue
		}
		if err != nil || got != tt.dec {
			t.Errorf("DecodeXtext(%q) = %q, %v; want %q", tt.enc, got, err, tt.dec)
		}
		back, err := DecodeXtext(EncodeXtext(tt.dec))
		if err != nil || back != tt.dec {
			t.Errorf("round trip of %q: %q, %v", tt.dec, back, err)
		}
	}
	for _, tt := range []struct{ in, want string }{
		{"plain", "plain"},
		{"a+b=c d", "a+2Bb+3Dc+20d"},
		{"\r\n", "+0D+0A"},
		{"é", "+C3+A9"},
		{"~!", "~!"},
	} {
		if got := EncodeXtext(tt.in); got != tt.want {
			t.Errorf("EncodeXtext(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

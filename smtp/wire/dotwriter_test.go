package wire

import (
	"strings"
	"testing"
)

func TestDotWriter(t *testing.T) {
	tests := []struct {
		in   []string // separate Writes
		want string
	}{
		{nil, ".\r\n"},
		{[]string{""}, ".\r\n"},
		{[]string{"Hello\r\n"}, "Hello\r\n.\r\n"},
		{[]string{"Hello"}, "Hello\r\n.\r\n"},
		{[]string{".\r\n"}, "..\r\n.\r\n"},
		{[]string{".x\r\n..y\r\nz.\r\n"}, "..x\r\n...y\r\nz.\r\n.\r\n"},
		{[]string{"a\r\n", ".b"}, "a\r\n..b\r\n.\r\n"},
		{[]string{"a\r", "\n.b\r\n"}, "a\r\n..b\r\n.\r\n"},
		{[]string{"a\r", ".b"}, "a\r\n..b\r\n.\r\n"},
		{[]string{"a\r"}, "a\r\n.\r\n"},
		// Bare line endings become CRLF: nothing sent can end the data early.
		{[]string{"a\n.\nb"}, "a\r\n..\r\nb\r\n.\r\n"},
		{[]string{"a\r.\rb"}, "a\r\n..\r\nb\r\n.\r\n"},
		{[]string{"a\n.\r\nb"}, "a\r\n..\r\nb\r\n.\r\n"},
		{[]string{"\n\n"}, "\r\n\r\n.\r\n"},
		{[]string{"\r\r\n"}, "\r\n\r\n.\r\n"},
	}
	for _, tt := range tests {
		var sb strings.Builder
		dw := NewDotWriter(&sb)
		for _, p := range tt.in {
			if n, err := dw.Write([]byte(p)); n != len(p) || err != nil {
				t.Fatalf("Write(%q) = %d, %v", p, n, err)
			}
		}
		if err := dw.Close(); err != nil {
			t.Fatal(err)
		}
		if sb.String() != tt.want {
			t.Errorf("DotWriter(%q) wrote %q, want %q", tt.in, sb.String(), tt.want)
		}
	}
}

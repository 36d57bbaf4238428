package smtp

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"<user@example.com>", "<>", "<postmaster>", "user@example.com SIZE=10",
		`<"john \"doe\""@example.com>`, `<"a>b"@x.org>`, "<@a.example,@b.example:u@c.example>",
		"<a@[192.0.2.1]>", "<a@[IPv6:2001:db8::1]>", "<a@[tag:x>y]>", "<jøran@bücher.example>",
		"<a\xff@x>", "<" + strings.Repeat("a", 65) + "@x>", `<""@x.org>`,
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, utf8ok bool) {
		a, rest, err := ParsePath(s, utf8ok)
		if err != nil {
			if a != (Address{}) || rest != s {
				t.Fatalf("ParsePath(%q) failed with %v but returned %#v, %q", s, err, a, rest)
			}
			return
		}
		if !strings.HasSuffix(s, rest) {
			t.Fatalf("rest %q is not a suffix of %q", rest, s)
		}
		if !utf8ok && !a.IsASCII() {
			t.Fatalf("ParsePath(%q, false) = non-ASCII %#v", s, a)
		}
		if !utf8.ValidString(a.Local) || !utf8.ValidString(a.Domain) {
			t.Fatalf("ParsePath(%q) = invalid UTF-8 %#v", s, a)
		}
		if len(a.Local) > MaxLocalPartLength || len(a.Domain) > MaxDomainLength || len(a.Path()) > MaxPathLength {
			t.Fatalf("ParsePath(%q) = %#v, over the limits", s, a)
		}
		// The wire form parses back to the same address.
		b, rest2, err := ParsePath(a.Path(), utf8ok)
		if err != nil || rest2 != "" || b != a {
			t.Fatalf("ParsePath(%q) = %#v; its Path %q parses to %#v, %q, %v", s, a, a.Path(), b, rest2, err)
		}
		if !utf8ok { // allowing UTF-8 changes nothing for an ASCII path
			c, rest3, err := ParsePath(s, true)
			if err != nil || c != a || rest3 != rest {
				t.Fatalf("ParsePath(%q, true) = %#v, %v; with false %#v", s, c, err, a)
			}
		}
		if a.Domain != "" {
			c, err := ParseAddress(a.String())
			if err != nil || c != a {
				t.Fatalf("ParseAddress(%q) = %#v, %v; want %#v", a.String(), c, err, a)
			}
		}
	})
}

func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{"user@example.com", `"a b"@x.org`, "a@[192.0.2.1]", "jøran@bücher.example", "postmaster", "a@b@c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddress(s)
		if err != nil {
			return
		}
		if a.Domain == "" || len(a.Path()) > MaxPathLength {
			t.Fatalf("ParseAddress(%q) = %#v", s, a)
		}
		b, err := ParseAddress(a.String())
		if err != nil || b != a {
			t.Fatalf("ParseAddress(%q) = %#v; its String %q parses to %#v, %v", s, a, a.String(), b, err)
		}
		c, rest, err := ParsePath(a.Path(), true)
		if err != nil || rest != "" || c != a {
			t.Fatalf("ParsePath(%q) = %#v, %q, %v; want %#v", a.Path(), c, rest, err, a)
		}
	})
}

func FuzzDecodeXtext(f *testing.F) {
	for _, s := range []string{"", "user@example.com", "a+2Bb+3D", "+4", "+2b", "a=b", "rfc822;joe+40x.org", "+00+FF"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		dec, err := DecodeXtext(s)
		if err != nil {
			return
		}
		enc := EncodeXtext(dec)
		for i := 0; i < len(enc); i++ {
			if c := enc[i]; c < 33 || c > 126 || c == '=' {
				t.Fatalf("EncodeXtext(%q) = %q: bad byte", dec, enc)
			}
		}
		back, err := DecodeXtext(enc)
		if err != nil || back != dec {
			t.Fatalf("DecodeXtext(EncodeXtext(%q)) = %q, %v", dec, back, err)
		}
		if !strings.Contains(s, "+") && dec != s {
			t.Fatalf("DecodeXtext(%q) = %q: plain xtext changed", s, dec)
		}
	})
}

func FuzzParseNotify(f *testing.F) {
	for _, s := range []string{"NEVER", "SUCCESS,FAILURE,DELAY", "success", "", "SUCCESS,SUCCESS"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseNotify(s)
		if err != nil {
			return
		}
		if len(n) == 0 || len(n) > 3 {
			t.Fatalf("ParseNotify(%q) = %v", s, n)
		}
		seen := map[DSNNotify]bool{}
		for _, v := range n {
			if seen[v] || v == NotifyNever && len(n) > 1 {
				t.Fatalf("ParseNotify(%q) = %v", s, n)
			}
			seen[v] = true
		}
	})
}

package smtp

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParsePath(t *testing.T) {
	local64 := strings.Repeat("l", 64)
	// A domain of 255 octets: 63+1+63+1+63+1+63.
	label := strings.Repeat("d", 63)
	domain255 := label + "." + label + "." + label + "." + label
	tests := []struct {
		in     string
		utf8   bool
		want   Address
		rest   string
		err    error
		reason string
	}{
		// RFC 5321 4.1.2 Dot-string.
		{in: "<user@example.com>", want: Address{"user", "example.com"}},
		{in: "<first.last@sub.example.com>", want: Address{"first.last", "sub.example.com"}},
		{in: "<a!#$%&'*+-/=?^_`{|}~@x.org>", want: Address{"a!#$%&'*+-/=?^_`{|}~", "x.org"}, reason: "all of atext"},
		{in: "<User@Example.COM>", want: Address{"User", "Example.COM"}, reason: "case kept as sent"},
		{in: "<a-b@x-y.example>", want: Address{"a-b", "x-y.example"}},
		{in: "<.a@x.org>", err: ErrPathSyntax, reason: "leading dot"},
		{in: "<a.@x.org>", err: ErrPathSyntax, reason: "trailing dot"},
		{in: "<a..b@x.org>", err: ErrPathSyntax, reason: "empty atom"},
		{in: "<a b@x.org>", err: ErrPathSyntax},
		{in: "<a(b)@x.org>", err: ErrPathSyntax, reason: "no comments in SMTP paths"},
		{in: "<@x.org>", err: ErrPathSyntax},
		{in: "<a@>", err: ErrPathSyntax},
		{in: "<a@@x.org>", err: ErrPathSyntax},
		{in: "<a@x..org>", err: ErrPathSyntax},
		{in: "<a@-x.org>", err: ErrPathSyntax, reason: "label starts with hyphen"},
		{in: "<a@x-.org>", err: ErrPathSyntax, reason: "label ends with hyphen"},
		{in: "<a@x.org.>", err: ErrPathSyntax, reason: "trailing root dot"},
		{in: "<a@x_y.org>", err: ErrPathSyntax},
		{in: "<a@" + strings.Repeat("x", 64) + ".org>", err: ErrPathSyntax, reason: "label of 64"},

		// Quoted-string local parts.
		{in: `<"john doe"@example.com>`, want: Address{"john doe", "example.com"}},
		{in: `<"a\"b"@x.org>`, want: Address{`a"b`, "x.org"}, reason: "escaped quote"},
		{in: `<"a\\b"@x.org>`, want: Address{`a\b`, "x.org"}, reason: "escaped backslash"},
		{in: `<"\a"@x.org>`, want: Address{"a", "x.org"}, reason: "needless escape"},
		{in: `<"a>b"@x.org>`, want: Address{"a>b", "x.org"}, reason: "'>' inside quotes"},
		{in: `<"a@b"@x.org>`, want: Address{"a@b", "x.org"}, reason: "'@' inside quotes"},
		{in: `<""@x.org>`, want: Address{"", "x.org"}, reason: "empty quoted string"},
		{in: `<"abc@x.org>`, err: ErrPathSyntax, reason: "unterminated quote"},
		{in: `<"a"b@x.org>`, err: ErrPathSyntax},
		{in: "<\"a\x01b\"@x.org>", err: ErrPathSyntax, reason: "control in qtext"},
		{in: "<\"a\\\x01\"@x.org>", err: ErrPathSyntax, reason: "control in quoted-pair"},
		{in: `<"a\`, err: ErrPathSyntax},

		// Address literals (RFC 5321 4.1.3).
		{in: "<a@[192.0.2.1]>", want: Address{"a", "[192.0.2.1]"}},
		{in: "<a@[IPv6:2001:db8::1]>", want: Address{"a", "[IPv6:2001:db8::1]"}},
		{in: "<a@[ipv6:::1]>", want: Address{"a", "[ipv6:::1]"}, reason: "tag case-insensitive"},
		{in: "<a@[IPv6:::ffff:192.0.2.1]>", want: Address{"a", "[IPv6:::ffff:192.0.2.1]"}},
		{in: "<a@[x-tag:some>thing]>", want: Address{"a", "[x-tag:some>thing]"}, reason: "general literal, '>' is dcontent"},
		{in: "<a@[2001:db8::1]>", want: Address{"a", "[2001:db8::1]"}, reason: "untagged IPv6 parses as a general literal (tag 2001); IP() refuses it"},
		{in: "<a@[IPv6:192.0.2.1]>", err: ErrAddressLiteral},
		{in: "<a@[IPv6:fe80::1%eth0]>", err: ErrAddressLiteral, reason: "no zones"},
		{in: "<a@[IPv6:]>", err: ErrAddressLiteral},
		{in: "<a@[192.0.2.256]>", err: ErrAddressLiteral},
		{in: "<a@[192.0.2]>", err: ErrAddressLiteral},
		{in: "<a@[]>", err: ErrAddressLiteral},
		{in: "<a@[tag-:x]>", err: ErrAddressLiteral, reason: "Ldh-str ends in Let-dig"},
		{in: "<a@[tag:]>", err: ErrAddressLiteral},
		{in: "<a@[tag:a b]>", err: ErrAddressLiteral},
		{in: "<a@[192.0.2.1>", err: ErrAddressLiteral, reason: "unterminated"},
		{in: "<a@[192.0.2.1]x>", err: ErrPathSyntax},

		// Source routes: accepted and ignored (RFC 5321 4.1.1.3, Appendix C).
		{in: "<@relay.example:user@x.org>", want: Address{"user", "x.org"}},
		{in: "<@a.example,@b.example:user@x.org>", want: Address{"user", "x.org"}},
		{in: "<@a.example,b.example:user@x.org>", err: ErrPathSyntax},
		{in: "<@a.example user@x.org>", err: ErrPathSyntax},
		{in: "<@:user@x.org>", err: ErrPathSyntax},
		{in: "<@a..b:user@x.org>", err: ErrPathSyntax},

		// Null path and postmaster.
		{in: "<>", want: Address{}},
		{in: "<> SIZE=10", want: Address{}, rest: " SIZE=10"},
		{in: "<postmaster>", want: Address{"postmaster", ""}},
		{in: "<PostMaster>", want: Address{"PostMaster", ""}},
		{in: "<postmaster@x.org>", want: Address{"postmaster", "x.org"}},
		{in: "<root>", err: ErrPathSyntax, reason: "only postmaster may go without a domain"},
		{in: `<"postmaster">`, err: ErrPathSyntax},
		{in: "<postmaster@>", err: ErrPathSyntax},
		{in: "postmaster@", err: ErrPathSyntax},
		{in: "<@r.example:postmaster>", want: Address{"postmaster", ""}},

		// Brackets: missing ones tolerated, unbalanced ones not.
		{in: "user@x.org", want: Address{"user", "x.org"}},
		{in: "user@x.org SIZE=1", want: Address{"user", "x.org"}, rest: " SIZE=1"},
		{in: "postmaster", want: Address{"postmaster", ""}},
		{in: "<user@x.org", err: ErrPathSyntax},
		{in: "user@x.org>", err: ErrPathSyntax},
		{in: "<user@x.org>SIZE=1", want: Address{"user", "x.org"}, rest: "SIZE=1", reason: "ParsePathArg checks the space"},
		{in: "", err: ErrPathSyntax},
		{in: "<", err: ErrPathSyntax},
		{in: " <a@x.org>", err: ErrPathSyntax},

		// Limits (RFC 5321 4.5.3.1).
		{in: "<" + local64 + "@x.org>", want: Address{local64, "x.org"}},
		{in: "<" + local64 + "l@x.org>", err: ErrLocalTooLong},
		{in: `<"` + local64[:62] + `"@x.org>`, want: Address{local64[:62], "x.org"}, reason: "64 with quotes"},
		{in: `<"` + local64[:63] + `"@x.org>`, err: ErrLocalTooLong, reason: "quotes count"},
		{in: "<a@" + domain255 + "x>", err: ErrDomainTooLong},
		{in: "<ab@" + domain255[:250] + ">", want: Address{"ab", domain255[:250]}, reason: "path of 255"},
		{in: "<abc@" + domain255[:250] + ">", want: Address{"abc", domain255[:250]}, reason: "path of 256"},
		{in: "<abcd@" + domain255[:250] + ">", err: ErrPathTooLong, reason: "path of 257"},
		{in: "abc@" + domain255[:250], want: Address{"abc", domain255[:250]}, reason: "256 counting the missing brackets"},
		{in: "abcd@" + domain255[:250], err: ErrPathTooLong},
		{in: "<@r.example:a@" + domain255[:250] + ">", err: ErrPathTooLong, reason: "the route counts"},

		// SMTPUTF8 (RFC 6531 3.3).
		{in: "<jøran@example.com>", err: ErrNeedsSMTPUTF8},
		{in: "<jøran@example.com>", utf8: true, want: Address{"jøran", "example.com"}},
		{in: "<user@bücher.example>", err: ErrNeedsSMTPUTF8},
		{in: "<user@bücher.example>", utf8: true, want: Address{"user", "bücher.example"}},
		{in: "<\"jø ran\"@x.org>", utf8: true, want: Address{"jø ran", "x.org"}},
		{in: "<@bücher.example:a@x.org>", err: ErrNeedsSMTPUTF8, reason: "the route counts too"},
		{in: "<用户@例子.广告>", utf8: true, want: Address{"用户", "例子.广告"}},
		{in: "<a\xff@x.org>", utf8: true, err: ErrInvalidUTF8},
		{in: "<a\xff@x.org>", err: ErrInvalidUTF8},
		{in: "<a@x\xc3.org>", utf8: true, err: ErrInvalidUTF8},
		{in: "<a@-bücher.example>", utf8: true, err: ErrPathSyntax},
		{in: "<\"a\\ø\"@x.org>", utf8: true, err: ErrPathSyntax, reason: "quoted-pair is ASCII only"},
	}
	for _, tt := range tests {
		got, rest, err := ParsePath(tt.in, tt.utf8)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("ParsePath(%q, %v) error = %v, want %v (%s)", tt.in, tt.utf8, err, tt.err, tt.reason)
			}
			if got != (Address{}) {
				t.Errorf("ParsePath(%q) = %#v with error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want || rest != tt.rest {
			t.Errorf("ParsePath(%q, %v) = %#v, %q, %v; want %#v, %q (%s)", tt.in, tt.utf8, got, rest, err, tt.want, tt.rest, tt.reason)
		}
	}
}

func TestParseAddress(t *testing.T) {
	tests := []struct {
		in   string
		want Address
		err  error
	}{
		{in: "user@example.com", want: Address{"user", "example.com"}},
		{in: `"a b"@example.com`, want: Address{"a b", "example.com"}},
		{in: "jøran@bücher.example", want: Address{"jøran", "bücher.example"}},
		{in: "a@[192.0.2.1]", want: Address{"a", "[192.0.2.1]"}},
		{in: "postmaster", err: ErrPathSyntax},
		{in: "<user@example.com>", err: ErrPathSyntax},
		{in: "user@example.com ", err: ErrPathSyntax},
		{in: "", err: ErrPathSyntax},
		{in: "a\xff@x.org", err: ErrInvalidUTF8},
		{in: strings.Repeat("a", 65) + "@x.org", err: ErrLocalTooLong},
		{in: "a@" + strings.Repeat("b.", 126) + "cc", err: ErrPathTooLong},
	}
	for _, tt := range tests {
		got, err := ParseAddress(tt.in)
		if !errors.Is(err, tt.err) || got != tt.want {
			t.Errorf("ParseAddress(%q) = %#v, %v; want %#v, %v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestAddressString(t *testing.T) {
	tests := []struct {
		a         Address
		str, path string
		null, pm  bool
		ascii     bool
	}{
		{a: Address{}, str: "", path: "<>", null: true, ascii: true},
		{a: Address{"user", "x.org"}, str: "user@x.org", path: "<user@x.org>", ascii: true},
		{a: Address{"a b", "x.org"}, str: `"a b"@x.org`, path: `<"a b"@x.org>`, ascii: true},
		{a: Address{`a"b\c`, "x.org"}, str: `"a\"b\\c"@x.org`, path: `<"a\"b\\c"@x.org>`, ascii: true},
		{a: Address{"a..b", "x.org"}, str: `"a..b"@x.org`, path: `<"a..b"@x.org>`, ascii: true},
		{a: Address{"", "x.org"}, str: `""@x.org`, path: `<""@x.org>`, ascii: true},
		{a: Address{"a@b", "x.org"}, str: `"a@b"@x.org`, path: `<"a@b"@x.org>`, ascii: true},
		{a: Address{"postmaster", ""}, str: "postmaster", path: "<postmaster>", pm: true, ascii: true},
		{a: Address{"POSTMASTER", ""}, str: "POSTMASTER", path: "<POSTMASTER>", pm: true, ascii: true},
		{a: Address{"jøran", "x.org"}, str: "jøran@x.org", path: "<jøran@x.org>"},
		{a: Address{"a", "[IPv6:::1]"}, str: "a@[IPv6:::1]", path: "<a@[IPv6:::1]>", ascii: true},
	}
	for _, tt := range tests {
		if s := tt.a.String(); s != tt.str {
			t.Errorf("%#v.String() = %q, want %q", tt.a, s, tt.str)
		}
		if p := tt.a.Path(); p != tt.path {
			t.Errorf("%#v.Path() = %q, want %q", tt.a, p, tt.path)
		}
		if tt.a.IsNull() != tt.null || tt.a.IsPostmaster() != tt.pm || tt.a.IsASCII() != tt.ascii {
			t.Errorf("%#v: IsNull %v IsPostmaster %v IsASCII %v", tt.a, tt.a.IsNull(), tt.a.IsPostmaster(), tt.a.IsASCII())
		}
		// Round trip: the wire form parses back to the same address.
		back, rest, err := ParsePath(tt.a.Path(), true)
		if err != nil || rest != "" || back != tt.a {
			t.Errorf("ParsePath(%q) = %#v, %q, %v; want %#v", tt.a.Path(), back, rest, err, tt.a)
		}
	}
}

func TestAddressIP(t *testing.T) {
	tests := []struct {
		domain string
		want   string // "" for none
	}{
		{"[192.0.2.1]", "192.0.2.1"},
		{"[IPv6:2001:db8::1]", "2001:db8::1"},
		{"[ipv6:2001:DB8::1]", "2001:db8::1"},
		{"[IPv6:::ffff:192.0.2.1]", "::ffff:192.0.2.1"},
		{"[2001:db8::1]", ""},
		{"[IPv6:192.0.2.1]", ""},
		{"[IPv6:fe80::1%eth0]", ""},
		{"[x-tag:foo]", ""},
		{"example.com", ""},
		{"192.0.2.1", ""},
		{"[]", ""},
		{"[", ""},
		{"", ""},
	}
	for _, tt := range tests {
		ip, ok := Address{Local: "a", Domain: tt.domain}.IP()
		if tt.want == "" {
			if ok || ip.IsValid() {
				t.Errorf("IP(%q) = %v, %v; want none", tt.domain, ip, ok)
			}
			continue
		}
		if !ok || ip != netip.MustParseAddr(tt.want) {
			t.Errorf("IP(%q) = %v, %v; want %s", tt.domain, ip, ok, tt.want)
		}
	}
}

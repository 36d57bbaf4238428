package smtp

import (
	"errors"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Limits from RFC 5321 4.5.3.1.
const (
	MaxLocalPartLength = 64
	MaxDomainLength    = 255
	MaxPathLength      = 256 // including the angle brackets
)

// Address is a mailbox as it appears in a reverse-path or forward-path.
//
// The zero Address is the null reverse-path "<>". A bare "<postmaster>"
// (RFC 5321 4.1.1.3) has Local "postmaster" and an empty Domain.
type Address struct {
	// Local is the local part with any quoting removed.
	Local string
	// Domain is the domain, or an address literal with its brackets
	// ("[192.0.2.1]", "[IPv6:2001:db8::1]"), as the client wrote it.
	Domain string
}

// IsNull reports whether a is the null reverse-path, "<>".
func (a Address) IsNull() bool { return a.Local == "" && a.Domain == "" }

// IsPostmaster reports whether a is the bare, domainless "postmaster".
func (a Address) IsPostmaster() bool { return a.Domain == "" && strings.EqualFold(a.Local, "postmaster") }

// IsASCII reports whether the address needs no SMTPUTF8.
func (a Address) IsASCII() bool { return isASCII(a.Local) && isASCII(a.Domain) }

// String returns the address in its wire form without angle brackets,
// quoting the local part when it is not a dot-string. The null path is "".
func (a Address) String() string {
	if a.IsNull() {
		return ""
	}
	local := a.Local
	if !isDotString(local, true) {
		local = quoteLocal(local)
	}
	if a.Domain == "" {
		return local
	}
	return local + "@" + a.Domain
}

// Path returns the address in angle brackets, as MAIL and RCPT carry it.
func (a Address) Path() string { return "<" + a.String() + ">" }

// IP returns the address of an address-literal domain such as "[192.0.2.1]"
// or "[IPv6:2001:db8::1]".
func (a Address) IP() (netip.Addr, bool) {
	d := a.Domain
	if len(d) < 2 || d[0] != '[' || d[len(d)-1] != ']' {
		return netip.Addr{}, false
	}
	d = d[1 : len(d)-1]
	if len(d) > 5 && strings.EqualFold(d[:5], "IPv6:") {
		ip, err := netip.ParseAddr(d[5:])
		return ip, err == nil && ip.Is6()
	}
	ip, err := netip.ParseAddr(d)
	return ip, err == nil && ip.Is4()
}

// Errors from the path parser. The server maps them to 501 or 553 replies
// with the enhanced code of the command they came from.
var (
	ErrPathSyntax      = errors.New("smtp: path syntax error")
	ErrPathTooLong     = errors.New("smtp: path too long")
	ErrNeedsSMTPUTF8   = errors.New("smtp: non-ASCII address without SMTPUTF8")
	ErrLocalTooLong    = errors.New("smtp: local part too long")
	ErrDomainTooLong   = errors.New("smtp: domain too long")
	ErrInvalidUTF8     = errors.New("smtp: invalid UTF-8 in address")
	ErrAddressLiteral  = errors.New("smtp: invalid address literal")
	ErrNullPathInvalid = errors.New("smtp: null path not allowed here")
)

// ParsePath parses a Reverse-path or Forward-path (RFC 5321 4.1.2) at the
// start of s and returns the address and what follows it. A source route
// ("<@a,@b:user@c>") is accepted and ignored (RFC 5321 4.1.1.3, C). When
// utf8 is false, a non-ASCII address fails with ErrNeedsSMTPUTF8.
//
// The null path "<>" is returned as the zero Address; callers parsing a
// forward-path reject it. A missing pair of angle brackets is tolerated
// ("MAIL FROM:user@example.com"), as Postfix and most receivers do, since
// the address itself is still unambiguous.
func ParsePath(s string, utf8 bool) (Address, string, error) {
	if len(s) == 0 {
		return Address{}, s, ErrPathSyntax
	}
	var inner, rest string
	if s[0] == '<' {
		end := closingBracket(s)
		if end < 0 {
			return Address{}, s, ErrPathSyntax
		}
		if end+1 > MaxPathLength {
			return Address{}, s, ErrPathTooLong
		}
		inner, rest = s[1:end], s[end+1:]
	} else {
		end := strings.IndexByte(s, ' ')
		if end < 0 {
			end = len(s)
		}
		inner, rest = s[:end], s[end:]
		if len(inner)+2 > MaxPathLength {
			return Address{}, s, ErrPathTooLong
		}
		if inner == "" {
			return Address{}, s, ErrPathSyntax
		}
	}
	if inner == "" {
		return Address{}, rest, nil
	}
	if inner[0] == '@' { // source route: skip "@dom,@dom:"
		colon := strings.IndexByte(inner, ':')
		if colon < 0 {
			return Address{}, s, ErrPathSyntax
		}
		for _, hop := range strings.Split(inner[:colon], ",") {
			if len(hop) < 2 || hop[0] != '@' || !isDomain(hop[1:], utf8) {
				return Address{}, s, ErrPathSyntax
			}
		}
		inner = inner[colon+1:]
	}
	a, err := parseMailbox(inner, utf8, true)
	return a, rest, err
}

// ParseAddress parses a bare mailbox "local@domain" (no brackets), as found
// in configuration and headers' addr-spec. UTF-8 is allowed.
func ParseAddress(s string) (Address, error) {
	if len(s) > MaxPathLength-2 {
		return Address{}, ErrPathTooLong
	}
	return parseMailbox(s, true, false)
}

// closingBracket finds the '>' that ends a path starting at s[0] == '<',
// skipping quoted strings, where '>' is an ordinary character.
func closingBracket(s string) int {
	quoted := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '>':
			return i
		}
	}
	return -1
}

func parseMailbox(s string, utf8ok, postmasterOK bool) (Address, error) {
	if !utf8.ValidString(s) {
		return Address{}, ErrInvalidUTF8
	}
	if !utf8ok && !isASCII(s) {
		return Address{}, ErrNeedsSMTPUTF8
	}
	var local, domain string
	if s != "" && s[0] == '"' {
		end := -1
		for i := 1; i < len(s); i++ {
			if s[i] == '\\' {
				i++
				continue
			}
			if s[i] == '"' {
				end = i
				break
			}
		}
		if end < 0 {
			return Address{}, ErrPathSyntax
		}
		q, ok := unquoteLocal(s[:end+1])
		if !ok {
			return Address{}, ErrPathSyntax
		}
		local, s = q, s[end+1:]
		if s == "" || s[0] != '@' {
			return Address{}, ErrPathSyntax
		}
		domain = s[1:]
		if end+1 > MaxLocalPartLength {
			return Address{}, ErrLocalTooLong
		}
	} else {
		at := strings.LastIndexByte(s, '@')
		if at < 0 {
			if postmasterOK && strings.EqualFold(s, "postmaster") {
				return Address{Local: s}, nil
			}
			return Address{}, ErrPathSyntax
		}
		local, domain = s[:at], s[at+1:]
		if !isDotString(local, utf8ok) {
			return Address{}, ErrPathSyntax
		}
		if len(local) > MaxLocalPartLength {
			return Address{}, ErrLocalTooLong
		}
	}
	if len(domain) > MaxDomainLength {
		return Address{}, ErrDomainTooLong
	}
	if strings.HasPrefix(domain, "[") {
		a := Address{Local: local, Domain: domain}
		if !isAddressLiteral(domain) {
			return Address{}, ErrAddressLiteral
		}
		return a, nil
	}
	if !isDomain(domain, utf8ok) {
		return Address{}, ErrPathSyntax
	}
	return Address{Local: local, Domain: domain}, nil
}

// isAddressLiteral checks RFC 5321 4.1.3: IPv4, "IPv6:" plus an IPv6
// address, or a General-address-literal "tag:dcontent".
func isAddressLiteral(d string) bool {
	if len(d) < 3 || d[len(d)-1] != ']' {
		return false
	}
	in := d[1 : len(d)-1]
	if len(in) > 5 && strings.EqualFold(in[:5], "IPv6:") {
		ip, err := netip.ParseAddr(in[5:])
		return err == nil && ip.Is6() && ip.Zone() == ""
	}
	if colon := strings.IndexByte(in, ':'); colon > 0 {
		tag, content := in[:colon], in[colon+1:]
		if !isLdhStr(tag) || content == "" {
			return false
		}
		for i := 0; i < len(content); i++ {
			// dcontent = %d33-90 / %d94-126
			if c := content[i]; c < 33 || c > 126 || (c >= 91 && c <= 93) {
				return false
			}
		}
		return true
	}
	ip, err := netip.ParseAddr(in)
	return err == nil && ip.Is4()
}

// isDomain checks Domain = sub-domain *("." sub-domain), each sub-domain
// Let-dig [Ldh-str], or a U-label when utf8 is allowed (RFC 6531 3.3).
func isDomain(d string, utf8ok bool) bool {
	if d == "" || len(d) > MaxDomainLength {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		if !isASCII(label) {
			if !utf8ok || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
				return false
			}
			for _, r := range label {
				if r < 0x80 && !isLetDig(byte(r)) && r != '-' {
					return false
				}
			}
			continue
		}
		if !isLetDig(label[0]) || !isLetDig(label[len(label)-1]) || !isLdhStr(label) {
			return false
		}
	}
	return true
}

func isLdhStr(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLetDig(s[i]) && s[i] != '-' {
			return false
		}
	}
	return true
}

func isLetDig(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// atext (RFC 5322 3.2.3) as a table for the hot path.
var atextTable = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "!#$%&'*+-/=?^_`{|}~" {
		t[c] = true
	}
	return t
}()

// isDotString checks Dot-string = Atom *("." Atom); with utf8, bytes of
// UTF-8 sequences count as atext (RFC 6531 3.3).
func isDotString(s string, utf8ok bool) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if s[i-1] == '.' {
				return false
			}
		case c >= 0x80:
			if !utf8ok {
				return false
			}
		case !atextTable[c]:
			return false
		}
	}
	return true
}

// unquoteLocal decodes a Quoted-string local part (RFC 5321 4.1.2).
func unquoteLocal(q string) (string, bool) {
	var b strings.Builder
	for i := 1; i < len(q)-1; i++ {
		c := q[i]
		if c == '\\' {
			i++
			if i >= len(q)-1 || q[i] < 32 || q[i] > 126 {
				return "", false
			}
			b.WriteByte(q[i])
			continue
		}
		// qtextSMTP = %d32-33 / %d35-91 / %d93-126, plus UTF-8 (RFC 6531)
		if c < 32 || c == 127 || c == '"' {
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

func quoteLocal(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

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
func (a Address) IsPostmaster() bool {
	return a.Domain == "" && strings.EqualFold(a.Local, "postmaster")
}

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
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return netip.Addr{}, false
		}
		return ip, true
	}
	ip, err := netip.ParseAddr(d)
	if err != nil || !ip.Is4() {
		return netip.Addr{}, false
	}
	return ip, true
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
// the address itself is still unambiguous; without brackets the path must
// be followed by a space or the end of s.
//
// The path is read left to right by its grammar, so a '>' or '@' inside a
// quoted local part or an address literal cannot end it early. A part that
// is too long fails with ErrLocalTooLong, ErrDomainTooLong or, when the
// parts are fine but the whole is not, ErrPathTooLong (RFC 5321 4.5.3.1).
func ParsePath(s string, utf8 bool) (Address, string, error) {
	bracket := s != "" && s[0] == '<'
	i := 0
	if bracket {
		i = 1
		if len(s) > 1 && s[1] == '>' {
			return Address{}, s[2:], nil
		}
	}
	start := i
	if i < len(s) && s[i] == '@' { // source route: "@dom,@dom:"
		for {
			if i >= len(s) || s[i] != '@' {
				return Address{}, s, ErrPathSyntax
			}
			j := scanDomain(s, i+1)
			if !isDomain(s[i+1:j], true) {
				return Address{}, s, ErrPathSyntax
			}
			if j < len(s) && s[j] == ',' {
				i = j + 1
				continue
			}
			if j < len(s) && s[j] == ':' {
				i = j + 1
				break
			}
			return Address{}, s, ErrPathSyntax
		}
	}
	m, err := scanMailbox(s, i, true)
	if err != nil {
		return Address{}, s, err
	}
	end := m.end
	if bracket {
		if end >= len(s) || s[end] != '>' {
			return Address{}, s, ErrPathSyntax
		}
	} else if end < len(s) && s[end] != ' ' {
		return Address{}, s, ErrPathSyntax
	}
	if err := m.check(s[start:end], utf8); err != nil {
		return Address{}, s, err
	}
	if bracket {
		end++
		if end > MaxPathLength {
			return Address{}, s, ErrPathTooLong
		}
	} else if end+2 > MaxPathLength {
		return Address{}, s, ErrPathTooLong
	}
	return m.addr, s[end:], nil
}

// ParseAddress parses a bare mailbox "local@domain" (no brackets), as found
// in configuration and headers' addr-spec. UTF-8 is allowed.
func ParseAddress(s string) (Address, error) {
	m, err := scanMailbox(s, 0, false)
	if err != nil {
		return Address{}, err
	}
	if m.end != len(s) {
		return Address{}, ErrPathSyntax
	}
	if err := m.check(s, true); err != nil {
		return Address{}, err
	}
	if len(s)+2 > MaxPathLength {
		return Address{}, ErrPathTooLong
	}
	return m.addr, nil
}

// mailbox is what scanMailbox found: the address, the length of the local
// part as sent (with quotes and escapes), and where the mailbox ended.
type mailbox struct {
	addr       Address
	localLen   int
	end        int
	postmaster bool // the bare "postmaster", with no "@"
}

// scanMailbox reads Mailbox = Local-part "@" ( Domain / address-literal )
// from s[i:]. It checks the syntax of the local part; check does the rest
// once the caller knows where the path ends. With postmasterOK a bare
// "postmaster" (RFC 5321 4.1.1.3) is a mailbox too.
func scanMailbox(s string, i int, postmasterOK bool) (mailbox, error) {
	var m mailbox
	begin := i
	if i < len(s) && s[i] == '"' {
		i++
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' {
				i++
			}
		}
		if i >= len(s) {
			return m, ErrPathSyntax
		}
		i++ // the closing quote
		local, ok := unquoteLocal(s[begin:i])
		if !ok {
			return m, ErrPathSyntax
		}
		m.addr.Local = local
	} else {
		for i < len(s) && (s[i] == '.' || s[i] >= 0x80 || atextTable[s[i]]) {
			i++
		}
		m.addr.Local = s[begin:i]
		if !isDotString(m.addr.Local, true) {
			return m, ErrPathSyntax
		}
	}
	m.localLen = i - begin
	if i >= len(s) || s[i] != '@' {
		if postmasterOK && s[begin] != '"' && strings.EqualFold(m.addr.Local, "postmaster") {
			m.end, m.postmaster = i, true
			return m, nil
		}
		return m, ErrPathSyntax
	}
	i++
	if i < len(s) && s[i] == '[' {
		j := strings.IndexByte(s[i:], ']')
		if j < 0 {
			return m, ErrAddressLiteral
		}
		m.addr.Domain, m.end = s[i:i+j+1], i+j+1
	} else {
		j := scanDomain(s, i)
		m.addr.Domain, m.end = s[i:j], j
	}
	return m, nil
}

// check validates the mailbox's encoding, lengths and domain; path is the
// text it was parsed from, including any source route.
func (m *mailbox) check(path string, utf8ok bool) error {
	if !utf8.ValidString(path) {
		return ErrInvalidUTF8
	}
	if !utf8ok && !isASCII(path) {
		return ErrNeedsSMTPUTF8
	}
	if m.localLen > MaxLocalPartLength {
		return ErrLocalTooLong
	}
	d := m.addr.Domain
	if len(d) > MaxDomainLength {
		return ErrDomainTooLong
	}
	if m.postmaster {
		return nil
	}
	if strings.HasPrefix(d, "[") {
		if !isAddressLiteral(d) {
			return ErrAddressLiteral
		}
		return nil
	}
	if !isDomain(d, true) {
		return ErrPathSyntax
	}
	return nil
}

// scanDomain returns the end of the run of domain characters at s[i:]:
// letters, digits, '-', '.', and the bytes of UTF-8 sequences.
func scanDomain(s string, i int) int {
	for i < len(s) && (isLetDig(s[i]) || s[i] == '-' || s[i] == '.' || s[i] >= 0x80) {
		i++
	}
	return i
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
		// Standardized-tag = Ldh-str, which ends in a Let-dig.
		tag, content := in[:colon], in[colon+1:]
		if !isLdhStr(tag) || !isLetDig(tag[len(tag)-1]) || content == "" {
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

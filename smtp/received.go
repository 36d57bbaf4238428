package smtp

import (
	"net/netip"
	"strings"
	"time"
)

// Received describes the trace header a receiver prepends to each message
// (RFC 5321 4.4). Every field is optional except By and Time.
type Received struct {
	// Helo is the name the client gave in HELO, EHLO or LHLO.
	Helo string
	// RemoteIP is the client's address as seen by the server.
	RemoteIP netip.Addr
	// ReverseName is the client's host name from reverse DNS, if known.
	ReverseName string
	// By is the receiving server's host name.
	By string
	// With is the protocol: SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA, LMTP,
	// UTF8SMTP... (the IANA "Mail Transmission Types", RFC 3848, 6531).
	With string
	// ID identifies the message or session in the receiver's logs.
	ID string
	// For is the recipient, added only when there is exactly one, since
	// listing several would disclose Bcc recipients.
	For string
	// TLS, when not empty, is a comment such as "version=TLS1.3
	// cipher=TLS_AES_128_GCM_SHA256".
	TLS string
	// Time is the moment of receipt.
	Time time.Time
}

// String renders the header field, folded, with a final CRLF. Values that
// came from the client are cleaned so that they cannot inject header lines.
func (r Received) String() string {
	var b strings.Builder
	b.Grow(256)
	b.WriteString("Received: from ")
	helo := cleanToken(r.Helo)
	if helo == "" {
		helo = "unknown"
	}
	b.WriteString(helo)
	if r.RemoteIP.IsValid() || r.ReverseName != "" {
		b.WriteString(" (")
		if r.ReverseName != "" {
			b.WriteString(cleanToken(r.ReverseName))
			b.WriteByte(' ')
		}
		if r.RemoteIP.IsValid() {
			ip := r.RemoteIP.Unmap()
			b.WriteByte('[')
			if ip.Is6() {
				b.WriteString("IPv6:")
			}
			b.WriteString(ip.WithZone("").String())
			b.WriteByte(']')
		}
		b.WriteByte(')')
	}
	b.WriteString("\r\n\tby ")
	b.WriteString(cleanToken(r.By))
	if r.With != "" {
		b.WriteString(" with ")
		b.WriteString(cleanToken(r.With))
	}
	if r.ID != "" {
		b.WriteString(" id ")
		b.WriteString(cleanToken(r.ID))
	}
	if r.TLS != "" {
		b.WriteString("\r\n\t(")
		b.WriteString(clean(r.TLS))
		b.WriteByte(')')
	}
	if r.For != "" {
		b.WriteString("\r\n\tfor <")
		b.WriteString(clean(r.For))
		b.WriteByte('>')
	}
	b.WriteString("; ")
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	b.WriteString(t.Format(time.RFC1123Z))
	b.WriteString("\r\n")
	return b.String()
}

// cleanToken is clean for a single word: a space would let a HELO name such
// as "x by trusted.example with ESMTP" pose as more clauses of the header,
// so spaces become '_' too.
func cleanToken(s string) string {
	s = clean(s)
	if strings.IndexByte(s, ' ') < 0 {
		return s
	}
	return strings.ReplaceAll(s, " ", "_")
}

// clean keeps a client-supplied token printable and on one line, and drops
// characters that would end a comment or an address early.
func clean(s string) string {
	ok := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == '(' || c == ')' || c == '<' || c == '>' || c == ';' {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f:
			continue
		case c == '(' || c == ')' || c == '<' || c == '>' || c == ';':
			b.WriteByte('_')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

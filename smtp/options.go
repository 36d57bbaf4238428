package smtp

import (
	"errors"
	"strings"
)

// BodyType is the BODY parameter of MAIL (RFC 6152, RFC 3030).
type BodyType string

const (
	Body7Bit       BodyType = "7BIT"
	Body8BitMIME   BodyType = "8BITMIME"
	BodyBinaryMIME BodyType = "BINARYMIME"
)

// DSNReturn is the RET parameter of MAIL (RFC 3461 4.3).
type DSNReturn string

const (
	ReturnFull    DSNReturn = "FULL"
	ReturnHeaders DSNReturn = "HDRS"
)

// DSNNotify is one value of the NOTIFY parameter of RCPT (RFC 3461 4.1).
type DSNNotify string

const (
	NotifyNever   DSNNotify = "NEVER"
	NotifySuccess DSNNotify = "SUCCESS"
	NotifyFailure DSNNotify = "FAILURE"
	NotifyDelay   DSNNotify = "DELAY"
)

// MailOptions holds the parameters of a MAIL command. A new extension adds a
// field here rather than a method to the hooks.
type MailOptions struct {
	// Size is the SIZE declared by the client (RFC 1870), 0 if none.
	Size int64
	// Body is the BODY parameter; empty when the client sent none.
	Body BodyType
	// UTF8 is set by the SMTPUTF8 parameter (RFC 6531).
	UTF8 bool
	// Return is the DSN RET parameter; empty when absent.
	Return DSNReturn
	// EnvelopeID is the DSN ENVID, xtext-decoded; empty when absent.
	EnvelopeID string
	// Auth is the AUTH= parameter (RFC 4954 5), xtext-decoded; "<>" when the
	// client says the submitter is unknown, empty when absent.
	Auth string
	// RequireTLS is set by the REQUIRETLS parameter (RFC 8689).
	RequireTLS bool
}

// RcptOptions holds the parameters of a RCPT command.
type RcptOptions struct {
	// Notify lists the DSN NOTIFY values; nil when absent (RFC 3461 4.1).
	Notify []DSNNotify
	// OriginalRecipientType is the addr-type of ORCPT, e.g. "rfc822".
	OriginalRecipientType string
	// OriginalRecipient is the xtext-decoded address of ORCPT.
	OriginalRecipient string
}

// ParseNotify parses a NOTIFY value: "NEVER", or a comma-separated list of
// SUCCESS, FAILURE and DELAY, each at most once.
func ParseNotify(v string) ([]DSNNotify, error) {
	if strings.EqualFold(v, "NEVER") {
		return []DSNNotify{NotifyNever}, nil
	}
	var out []DSNNotify
	seen := map[DSNNotify]bool{}
	for part := range strings.SplitSeq(v, ",") {
		n := DSNNotify(strings.ToUpper(part))
		switch n {
		case NotifySuccess, NotifyFailure, NotifyDelay:
		default:
			return nil, errors.New("smtp: invalid NOTIFY value")
		}
		if seen[n] {
			return nil, errors.New("smtp: repeated NOTIFY value")
		}
		seen[n] = true
		out = append(out, n)
	}
	return out, nil
}

// DecodeXtext decodes RFC 3461 4 xtext: "+HH" stands for the octet HH, and
// every other character must be a printable ASCII other than '+' and '='.
func DecodeXtext(s string) (string, error) {
	if strings.IndexByte(s, '+') < 0 {
		for i := 0; i < len(s); i++ {
			if s[i] < 33 || s[i] > 126 || s[i] == '=' {
				return "", errors.New("smtp: invalid xtext")
			}
		}
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			if i+2 >= len(s) {
				return "", errors.New("smtp: truncated xtext escape")
			}
			hi, lo := unhex(s[i+1]), unhex(s[i+2])
			if hi < 0 || lo < 0 {
				return "", errors.New("smtp: invalid xtext escape")
			}
			b.WriteByte(byte(hi<<4 | lo))
			i += 2
		case c < 33 || c > 126 || c == '=':
			return "", errors.New("smtp: invalid xtext")
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// EncodeXtext encodes s as RFC 3461 xtext.
func EncodeXtext(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 33 || c > 126 || c == '+' || c == '=' {
			b.WriteByte('+')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// unhex accepts upper-case hex only, as xtext's hexchar requires.
func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

package wire

import (
	"errors"
	"strconv"
	"strings"

	"github.com/smtpkit/smtpkit/smtp"
)

// Reply is a server's reply as a client reads it.
type Reply struct {
	Code         int
	EnhancedCode smtp.EnhancedCode // zero if the server sent none
	Lines        []string          // text of each line, enhanced code removed
}

// Text joins the reply's lines with "\n".
func (r Reply) Text() string { return strings.Join(r.Lines, "\n") }

// Err returns the reply as an *smtp.Error when its code is not in the 2xx
// or 3xx range, nil otherwise.
func (r Reply) Err() *smtp.Error {
	if r.Code >= 200 && r.Code < 400 {
		return nil
	}
	return &smtp.Error{Code: r.Code, EnhancedCode: r.EnhancedCode, Message: r.Text()}
}

// ErrMalformedReply is a reply line that is not "ddd" followed by a space,
// a hyphen, or nothing.
var ErrMalformedReply = errors.New("wire: malformed reply")

// maxReplyLines bounds a multi-line reply, so a hostile server cannot make a
// client collect lines forever.
const maxReplyLines = 256

// ReadReply reads one possibly multi-line reply (RFC 5321 4.2.1). Every
// line must carry the same code. Enhanced status codes are split off when
// the first line has one whose class matches the code's.
func (b *Reader) ReadReply(maxLine int) (Reply, error) {
	var r Reply
	for n := 0; ; n++ {
		if n >= maxReplyLines {
			return r, ErrMalformedReply
		}
		line, err := b.ReadLine(maxLine)
		if err != nil {
			return r, err
		}
		if len(line) < 3 || len(line) > 3 && line[3] != ' ' && line[3] != '-' {
			return r, ErrMalformedReply
		}
		code, err := strconv.Atoi(string(line[:3]))
		if err != nil || code < 200 || code > 599 {
			return r, ErrMalformedReply
		}
		if n == 0 {
			r.Code = code
		} else if code != r.Code {
			return r, ErrMalformedReply
		}
		text := ""
		if len(line) > 4 {
			text = string(line[4:])
		}
		if n == 0 {
			r.EnhancedCode, _ = splitEnhanced(text, code)
		}
		if r.EnhancedCode != (smtp.EnhancedCode{}) {
			_, text = splitEnhanced(text, code)
		}
		r.Lines = append(r.Lines, text)
		if len(line) == 3 || line[3] == ' ' {
			return r, nil
		}
	}
}

// splitEnhanced parses a leading "x.y.z " whose class agrees with code.
func splitEnhanced(text string, code int) (smtp.EnhancedCode, string) {
	ec, rest, ok := smtp.ParseEnhancedCode(text)
	if !ok || ec[0] != code/100 {
		return smtp.EnhancedCode{}, text
	}
	return ec, rest
}

package smtp

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
)

// EnhancedCode is an RFC 3463 enhanced status code, class.subject.detail.
// The zero value means "none": the reply carries only its basic code.
type EnhancedCode [3]int

// String formats the code as "5.1.1"; the zero value formats as "".
func (c EnhancedCode) String() string {
	if c == (EnhancedCode{}) {
		return ""
	}
	return strconv.Itoa(c[0]) + "." + strconv.Itoa(c[1]) + "." + strconv.Itoa(c[2])
}

// Error is an SMTP reply that ends a step: a rejection (5xx), a deferral
// (4xx), or, from a remote server, any reply that was not the one wanted.
//
// Message is what the client is shown; Err is the cause, for logs only, so
// that internal detail never leaks into a reply.
type Error struct {
	Code         int
	EnhancedCode EnhancedCode
	Message      string
	Err          error
}

// NewError returns an Error with the given reply.
func NewError(code int, enh EnhancedCode, msg string) *Error {
	return &Error{Code: code, EnhancedCode: enh, Message: msg}
}

// Errorf returns an Error whose message is formatted like fmt.Sprintf.
func Errorf(code int, enh EnhancedCode, format string, args ...any) *Error {
	return &Error{Code: code, EnhancedCode: enh, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error with the given reply whose cause is err.
func Wrap(code int, enh EnhancedCode, msg string, err error) *Error {
	return &Error{Code: code, EnhancedCode: enh, Message: msg, Err: err}
}

func (e *Error) Error() string {
	if e == nil {
		return "smtp: <nil *Error>"
	}
	s := strconv.Itoa(e.Code)
	if ec := e.EnhancedCode.String(); ec != "" {
		s += " " + ec
	}
	s += " " + e.Message
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error {
	if e == nil {
		return nil
	}
	return e.Err
}

// Temporary reports whether the reply is a 4xx: the sender should try again.
func (e *Error) Temporary() bool { return e != nil && e.Code >= 400 && e.Code < 500 }

// Permanent reports whether the reply is a 5xx.
func (e *Error) Permanent() bool { return e != nil && e.Code >= 500 && e.Code < 600 }

// ErrorOf returns the reply that err stands for. An *Error anywhere in err's
// chain is returned as it is; any other error becomes 451 4.3.0 with err as
// its cause, except a full disk or quota (ENOSPC, EDQUOT), which is 452 4.3.1
// (RFC 3463: mail system full). Untyped errors are temporary on purpose: a
// bug or an outage in a hook must make the client retry, never make it
// bounce mail for good.
//
// A nil *Error inside a non-nil error (a hook that returned a typed nil) is
// treated as untyped, so the result is never nil for a non-nil err.
func ErrorOf(err error) *Error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) && se != nil {
		return se
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &Error{Code: 452, EnhancedCode: EnhancedCode{4, 3, 1}, Message: "Insufficient system storage", Err: err}
	}
	return &Error{Code: 451, EnhancedCode: EnhancedCode{4, 3, 0}, Message: "Temporary local problem, try again later", Err: err}
}

// Common replies, as constructors so that no caller can change a shared value.

// Reject returns 550 5.7.1 with msg: refused by policy.
func Reject(msg string) *Error { return NewError(550, EnhancedCode{5, 7, 1}, msg) }

// Defer returns 451 4.7.1 with msg: refused for now by policy, try later.
func Defer(msg string) *Error { return NewError(451, EnhancedCode{4, 7, 1}, msg) }

// NoSuchUser returns 550 5.1.1: the recipient mailbox does not exist.
func NoSuchUser() *Error { return NewError(550, EnhancedCode{5, 1, 1}, "No such user here") }

// ParseEnhancedCode parses an RFC 3463 code, "class.subject.detail", at
// the start of s, followed by a space or the end: class 2, 4 or 5, subject
// and detail of one to three digits. It returns the rest after the space.
func ParseEnhancedCode(s string) (code EnhancedCode, rest string, ok bool) {
	word, rest, _ := strings.Cut(s, " ")
	parts := strings.Split(word, ".")
	if len(parts) != 3 {
		return EnhancedCode{}, s, false
	}
	for i, p := range parts {
		if p == "" || len(p) > 3 || i == 0 && len(p) != 1 {
			return EnhancedCode{}, s, false
		}
		for j := 0; j < len(p); j++ {
			if p[j] < '0' || p[j] > '9' {
				return EnhancedCode{}, s, false
			}
			code[i] = code[i]*10 + int(p[j]-'0')
		}
	}
	if code[0] != 2 && code[0] != 4 && code[0] != 5 {
		return EnhancedCode{}, s, false
	}
	return code, rest, true
}

package wire

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/smtpkit/smtpkit/smtp"
)

// Command is one parsed command line.
type Command struct {
	// Verb is the command in upper case, e.g. "MAIL". Unknown verbs are kept
	// as sent, upper-cased.
	Verb string
	// Arg is everything after the verb and its separating space.
	Arg string
}

// Errors from ParseCommand.
var (
	ErrEmptyCommand = errors.New("wire: empty command")
	ErrBadCharacter = errors.New("wire: NUL, CR or LF in command")
	ErrBadUTF8      = errors.New("wire: invalid UTF-8 in command")
)

var knownVerbs = []string{"HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET",
	"NOOP", "QUIT", "VRFY", "EXPN", "HELP", "STARTTLS", "AUTH"}

// ParseCommand splits a command line (without its CRLF) into verb and
// argument. A NUL, CR or LF, or invalid UTF-8 anywhere in the line, is
// refused: none has a place in a command, and letting them through invites
// injection into logs and trace headers.
func ParseCommand(line []byte) (Command, error) {
	if len(line) == 0 {
		return Command{}, ErrEmptyCommand
	}
	if bytes.IndexByte(line, 0) >= 0 || bytes.IndexByte(line, '\r') >= 0 || bytes.IndexByte(line, '\n') >= 0 {
		return Command{}, ErrBadCharacter
	}
	if !utf8.Valid(line) {
		return Command{}, ErrBadUTF8
	}
	verb, arg := line, []byte(nil)
	if i := bytes.IndexByte(line, ' '); i >= 0 {
		verb, arg = line[:i], line[i+1:]
	}
	var c Command
	for _, k := range knownVerbs {
		if len(k) == len(verb) && equalFoldASCII(k, verb) {
			c.Verb = k
			break
		}
	}
	if c.Verb == "" {
		c.Verb = strings.ToUpper(string(verb))
	}
	if len(arg) > 0 {
		c.Arg = string(arg)
	}
	return c, nil
}

// Param is one ESMTP parameter of MAIL or RCPT: "KEY=value", or "KEY" alone.
type Param struct {
	Key   string // upper case
	Value string
	Bare  bool // no "=value"
}

// ErrParamSyntax is a malformed esmtp-param (RFC 5321 4.1.2).
var ErrParamSyntax = errors.New("wire: malformed parameter")

// ParsePathArg parses the argument of MAIL or RCPT: prefix ("FROM:" or
// "TO:", any case), an optional space (tolerated, as every receiver does),
// the path, then parameters, which must be separated from the path by a
// space (RFC 5321 4.1.1.2). Addresses may be UTF-8 here; the caller decides
// whether SMTPUTF8 allows it.
func ParsePathArg(arg, prefix string) (smtp.Address, []Param, error) {
	if len(arg) < len(prefix) || !strings.EqualFold(arg[:len(prefix)], prefix) {
		return smtp.Address{}, nil, smtp.ErrPathSyntax
	}
	arg = strings.TrimLeft(arg[len(prefix):], " ")
	addr, rest, err := smtp.ParsePath(arg, true)
	if err != nil {
		return smtp.Address{}, nil, err
	}
	if rest != "" && rest[0] != ' ' {
		return smtp.Address{}, nil, smtp.ErrPathSyntax
	}
	params, err := ParseParams(rest)
	return addr, params, err
}

// ParseParams parses esmtp-params separated by spaces; runs of spaces and
// leading or trailing ones are tolerated. Any other white space is part of
// a parameter, and so a syntax error.
func ParseParams(s string) ([]Param, error) {
	var out []Param
	for f := range strings.SplitSeq(s, " ") {
		if f == "" {
			continue
		}
		p := Param{}
		if k, v, ok := strings.Cut(f, "="); ok {
			p.Key, p.Value = k, v
			if v == "" {
				return nil, ErrParamSyntax
			}
		} else {
			p.Key, p.Bare = f, true
		}
		if !isKeyword(p.Key) {
			return nil, ErrParamSyntax
		}
		for i := 0; i < len(p.Value); i++ {
			// esmtp-value = 1*(%d33-60 / %d62-126), plus UTF-8 (RFC 6531).
			if c := p.Value[i]; c < 33 || c == '=' || c == 127 {
				return nil, ErrParamSyntax
			}
		}
		p.Key = strings.ToUpper(p.Key)
		out = append(out, p)
	}
	return out, nil
}

func isKeyword(k string) bool {
	if k == "" || !isLetDig(k[0]) {
		return false
	}
	for i := 1; i < len(k); i++ {
		if !isLetDig(k[i]) && k[i] != '-' {
			return false
		}
	}
	return true
}

// equalFoldASCII compares a known verb with what the client sent,
// ignoring ASCII case, without allocating.
func equalFoldASCII(k string, b []byte) bool {
	for i := 0; i < len(k); i++ {
		c := b[i]
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		if k[i] != c {
			return false
		}
	}
	return true
}

func isLetDig(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

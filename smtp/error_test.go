package smtp

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"testing"
)

func TestEnhancedCodeString(t *testing.T) {
	for _, tt := range []struct {
		c    EnhancedCode
		want string
	}{
		{EnhancedCode{}, ""},
		{EnhancedCode{2, 0, 0}, "2.0.0"},
		{EnhancedCode{5, 1, 10}, "5.1.10"},
		{EnhancedCode{4, 7, 0}, "4.7.0"},
	} {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("%v.String() = %q, want %q", [3]int(tt.c), got, tt.want)
		}
	}
}

func TestErrorFormatting(t *testing.T) {
	cause := errors.New("disk full")
	for _, tt := range []struct {
		e    *Error
		want string
	}{
		{NewError(550, EnhancedCode{5, 1, 1}, "No such user"), "550 5.1.1 No such user"},
		{NewError(421, EnhancedCode{}, "Bye"), "421 Bye"},
		{Errorf(452, EnhancedCode{4, 5, 3}, "Too many recipients (max %d)", 100), "452 4.5.3 Too many recipients (max 100)"},
		{Wrap(451, EnhancedCode{4, 3, 0}, "Try later", cause), "451 4.3.0 Try later: disk full"},
		{Reject("Spam"), "550 5.7.1 Spam"},
		{Defer("Greylisted"), "451 4.7.1 Greylisted"},
		{NoSuchUser(), "550 5.1.1 No such user here"},
		{nil, "smtp: <nil *Error>"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	// The constructors return fresh values: changing one changes no other.
	a, b := Reject("x"), Reject("x")
	a.Code = 554
	if b.Code != 550 {
		t.Error("Reject returned a shared value")
	}
}

func TestErrorUnwrap(t *testing.T) {
	e := Wrap(451, EnhancedCode{4, 3, 0}, "Try later", io.ErrUnexpectedEOF)
	if !errors.Is(e, io.ErrUnexpectedEOF) {
		t.Error("errors.Is does not see the cause")
	}
	if (*Error)(nil).Unwrap() != nil {
		t.Error("nil Unwrap")
	}
}

func TestTemporaryPermanent(t *testing.T) {
	for _, tt := range []struct {
		code      int
		tmp, perm bool
	}{
		{250, false, false}, {354, false, false}, {399, false, false},
		{400, true, false}, {421, true, false}, {451, true, false}, {499, true, false},
		{500, false, true}, {550, false, true}, {599, false, true}, {600, false, false},
	} {
		e := &Error{Code: tt.code}
		if e.Temporary() != tt.tmp || e.Permanent() != tt.perm {
			t.Errorf("%d: Temporary %v Permanent %v", tt.code, e.Temporary(), e.Permanent())
		}
	}
	var nilErr *Error
	if nilErr.Temporary() || nilErr.Permanent() {
		t.Error("nil *Error is neither")
	}
}

func TestErrorOf(t *testing.T) {
	if ErrorOf(nil) != nil {
		t.Fatal("ErrorOf(nil) != nil")
	}

	// A typed error passes through unchanged, however deeply wrapped.
	typed := NewError(550, EnhancedCode{5, 7, 1}, "Go away")
	for _, err := range []error{
		typed,
		fmt.Errorf("rcpt hook: %w", typed),
		fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", typed)),
		errors.Join(errors.New("other"), typed),
	} {
		if got := ErrorOf(err); got != typed {
			t.Errorf("ErrorOf(%v) = %v, want the same *Error", err, got)
		}
	}

	// Anything else is a temporary local problem, with the cause kept for
	// logs but not shown.
	cause := errors.New("database: connection refused")
	got := ErrorOf(fmt.Errorf("lookup: %w", cause))
	if got.Code != 451 || got.EnhancedCode != (EnhancedCode{4, 3, 0}) || !got.Temporary() {
		t.Errorf("untyped error became %v, want 451 4.3.0", got)
	}
	if !errors.Is(got, cause) {
		t.Error("cause lost")
	}
	if got.Message != "Temporary local problem, try again later" {
		t.Errorf("message %q leaks or changed", got.Message)
	}

	// A full disk or quota says so: the client retries either way, but its
	// operator sees why.
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT} {
		cause := &os.PathError{Op: "write", Path: "/var/spool/x", Err: errno}
		got := ErrorOf(fmt.Errorf("maildir: %w", cause))
		if got.Code != 452 || got.EnhancedCode != (EnhancedCode{4, 3, 1}) || !errors.Is(got, errno) {
			t.Errorf("%v became %v, want 452 4.3.1 wrapping it", errno, got)
		}
	}

	// A hook returning a typed nil *Error through the error interface: a
	// non-nil error must never become a nil reply.
	var typedNil *Error
	var err error = typedNil
	if got := ErrorOf(err); got == nil || got.Code != 451 {
		t.Errorf("ErrorOf(typed nil) = %v, want 451", got)
	}
	if got := ErrorOf(fmt.Errorf("x: %w", typedNil)); got == nil || got.Code != 451 {
		t.Errorf("ErrorOf(wrapped typed nil) = %v, want 451", got)
	}
}

func TestParseEnhancedCode(t *testing.T) {
	for _, tc := range []struct {
		in   string
		code EnhancedCode
		rest string
		ok   bool
	}{
		{"5.1.1 No such user", EnhancedCode{5, 1, 1}, "No such user", true},
		{"2.0.0", EnhancedCode{2, 0, 0}, "", true},
		{"4.7.123 x", EnhancedCode{4, 7, 123}, "x", true},
		{"3.0.0 no", EnhancedCode{}, "3.0.0 no", false},
		{"55.1.1 x", EnhancedCode{}, "55.1.1 x", false},
		{"5.1 x", EnhancedCode{}, "5.1 x", false},
		{"5.1.1234 x", EnhancedCode{}, "5.1.1234 x", false},
		{"5.a.1 x", EnhancedCode{}, "5.a.1 x", false},
		{"hello", EnhancedCode{}, "hello", false},
	} {
		code, rest, ok := ParseEnhancedCode(tc.in)
		if code != tc.code || rest != tc.rest || ok != tc.ok {
			t.Errorf("ParseEnhancedCode(%q) = %v %q %v", tc.in, code, rest, ok)
		}
	}
}

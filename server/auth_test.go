package server

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/emersion/go-sasl"

	"github.com/smtpkit/smtpkit/smtp"
)

// Base64 of the SASL messages used below:
//
//	AHVzZXIAc2VjcmV0          "\0user\0secret"
//	YWRtaW4AdXNlcgBzZWNyZXQ=  "admin\0user\0secret"
//	AHVzZXIAd3Jvbmc=          "\0user\0wrong"
//	AHVzZXIAZG93bg==          "\0user\0down" (the check fails: 454)
//	AHVzZXIAd2Vhaw==          "\0user\0weak" (a typed 534)
//	AHVzZXIAd3JhcHBlZA==      "\0user\0wrapped" (a wrapped ErrAuthFailed)
//	dXNlcg== c2VjcmV0 d3Jvbmc= "user" "secret" "wrong"
//	VXNlcm5hbWU6 UGFzc3dvcmQ6  "Username:" "Password:"
func TestAUTH(t *testing.T) {
	t.Parallel()
	authed := func(identity string) func(t *testing.T, m mode, b *backend) {
		return func(t *testing.T, m mode, b *backend) {
			msgs := b.Messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages", len(msgs))
			}
			equal(t, "identity in the MAIL hook", msgs[0].identity, identity)
		}
	}
	longIR := base64.StdEncoding.EncodeToString([]byte("\x00long\x00" + strings.Repeat("p", 3000)))
	cases := []scriptCase{{
		name: "PLAIN with initial response",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 235 2.7.0 Authentication successful
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 503 5.5.1 Already authenticated
			C: MAIL FROM:<a@example.com> AUTH=a+2Bb@example.com
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			authed("user")(t, m, b)
			equal(t, "AUTH=", b.Messages()[0].opts.Auth, "a+b@example.com")
		},
	}, {
		name: "PLAIN with an authorization identity",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH plain YWRtaW4AdXNlcgBzZWNyZXQ=
			S: 235 2.7.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equal(t, "last event", b.Events()[len(b.Events())-1], `auth "admin" "user"`)
		},
	}, {
		name: "PLAIN challenge and response",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH PLAIN
			S: 334
			C: AHVzZXIAc2VjcmV0
			S: 235 2.7.0
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: BDAT 0 LAST
			S: 250 2.0.0
		`,
		check: authed("user"),
	}, {
		name: "LOGIN",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH LOGIN
			S: 334 VXNlcm5hbWU6
			C: dXNlcg==
			S: 334 UGFzc3dvcmQ6
			C: c2VjcmV0
			S: 235 2.7.0
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
		`,
		check: authed("user"),
	}, {
		name: "LOGIN with initial response",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH LOGIN dXNlcg==
			S: 334 UGFzc3dvcmQ6
			C: c2VjcmV0
			S: 235 2.7.0
		`,
	}, {
		name: "empty initial response",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH LOGIN =
			S: 334 UGFzc3dvcmQ6
			C: c2VjcmV0
			S: 535 5.7.8
			C: AUTH PLAIN =
			S: 535 5.7.8
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 235 2.7.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equalSlices(t, "events", b.sessionEvents(m), []string{"hello client.test", `auth "" ""`, `auth "" "user"`})
		},
	}, {
		name: "cancel",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH PLAIN
			S: 334
			C: *
			S: 501 5.7.0 Authentication cancelled
			C: AUTH LOGIN
			S: 334 VXNlcm5hbWU6
			C: *
			S: 501 5.7.0
			C: AUTH LOGIN dXNlcg==
			S: 334 UGFzc3dvcmQ6
			C: *
			S: 501 5.7.0
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 235 2.7.0
		`,
	}, {
		name: "broken base64",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH PLAIN AHVzZXIAc2VjcmV0=
			S: 501 5.5.2 Invalid base64
			C: AUTH LOGIN
			S: 334 VXNlcm5hbWU6
			C: %%%
			S: 501 5.5.2 Invalid base64
			C: AUTH PLAIN
			S: 334
			C: !
			S: 501 5.5.2
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 235 2.7.0
		`,
	}, {
		name:   "failure replies",
		server: func(s *Server) { s.MaxAuthFailures = 10 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH PLAIN AHVzZXIAd3Jvbmc=
			S: 535 5.7.8 Authentication credentials invalid
			C: AUTH PLAIN AHVzZXIAd3JhcHBlZA==
			S: 535 5.7.8 Authentication credentials invalid
			C: AUTH PLAIN AHVzZXIAZG93bg==
			S: 454 4.7.0 Temporary authentication failure
			C: AUTH PLAIN AHVzZXIAd2Vhaw==
			S: 534 5.7.9 Authentication mechanism is too weak
			C: AUTH LOGIN dXNlcg==
			S: 334 UGFzc3dvcmQ6
			C: d3Jvbmc=
			S: 535 5.7.8
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
		`,
		check: authed(""),
	}, {
		name: "three failures close the connection",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH PLAIN AHVzZXIAd3Jvbmc=
			S: 535 5.7.8
			C: AUTH LOGIN dXNlcg==
			S: 334 UGFzc3dvcmQ6
			C: d3Jvbmc=
			S: 535 5.7.8
			C: AUTH PLAIN AHVzZXIAd3Jvbmc=
			S: 535 5.7.8
			S: 421 4.7.0 mx.test Too many authentication failures
			S: EOF
		`,
		check: func(t *testing.T, m mode, b *backend) {
			if b.waitClose() == nil {
				t.Error("Close got nil")
			}
		},
		serves: true,
	}, {
		name: "unknown mechanism",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH CRAM-MD5
			S: 504 5.5.4 Unrecognized authentication mechanism
			C: AUTH
			S: 504 5.5.4
		`,
	}, {
		name: "AUTH out of place",
		script: `
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 503 Say EHLO first
			C: HELO client.test
			S: 250 mx.test
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 503 Say EHLO first
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 503 5.5.1 AUTH not allowed during a mail transaction
		`,
	}, {
		name: "AUTH= is ignored from an unauthenticated client",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com> AUTH=boss@example.com
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equal(t, "AUTH=", b.Messages()[0].opts.Auth, "")
		},
	}, {
		name: "long initial response",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: NOOP ` + strings.Repeat("x", 3000) + `
			S: 500 5.5.2 Line too long
			C: AUTH PLAIN ` + longIR + `
			S: 235 2.7.0
			C: NOOP ` + strings.Repeat("x", 3000) + `
			S: 500 5.5.2 Line too long
			C: NOOP
			S: 250 2.0.0
		`,
	}, {
		name: "overlong AUTH lines",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: AUTH PLAIN
			S: 334
			C: ` + strings.Repeat("A", 13000) + `
			S: 500 5.5.6 Authentication exchange line is too long
			C: AUTH PLAIN ` + strings.Repeat("A", 13000) + `
			S: 500 5.5.2 Line too long
			C: NOOP
			S: 250 2.0.0
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 235 2.7.0
		`,
		serves: true,
	}}
	for i := range cases {
		cases[i].modes = tlsModes
		cases[i].backend = func(b *backend) { b.auth = true }
	}
	runScripts(t, cases)
}

type saslSession struct{ *testSession }

func (s saslSession) AuthMechanisms() []string { return []string{"ANONYMOUS"} }

func (s saslSession) AuthSASL(ctx context.Context, mech string) (sasl.Server, func() string, error) {
	var trace string
	srv := sasl.NewAnonymousServer(func(t string) error {
		switch t {
		case "nobody":
			return errors.New("anonymous access refused")
		case "down":
			return smtp.NewError(454, smtp.EnhancedCode{4, 7, 0}, "Trace log unavailable")
		}
		trace = t
		return nil
	})
	return srv, func() string { return "anonymous:" + trace }, nil
}

// Mechanisms from a SASLSession: advertised, run, and their identity kept.
func TestAUTHSASLSession(t *testing.T) {
	t.Parallel()
	// dHJhY2U= is "trace", bm9ib2R5 is "nobody", ZG93bg== is "down".
	runScripts(t, []scriptCase{{
		name:    "ANONYMOUS",
		modes:   tlsModes,
		backend: func(b *backend) { b.sasl = true },
		script: `
			C: EHLO client.test
			S: 250-mx.test greets client.test\n250-PIPELINING\n250-SIZE 10240000\n250-8BITMIME\n250-ENHANCEDSTATUSCODES\n250-SMTPUTF8\n250-CHUNKING\n250-BINARYMIME\n250-DSN\n250 AUTH ANONYMOUS
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 504 5.5.4
			C: AUTH ANONYMOUS bm9ib2R5
			S: 535 5.7.8
			C: AUTH ANONYMOUS ZG93bg==
			S: 454 4.7.0 Trace log unavailable
			C: AUTH ANONYMOUS
			S: 334
			C: dHJhY2U=
			S: 235 2.7.0
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equal(t, "identity", b.Messages()[0].identity, "anonymous:trace")
		},
	}})
}

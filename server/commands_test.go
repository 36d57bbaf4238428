package server

import (
	"context"
	"reflect"
	"strings"
	"testing"

	"github.com/smtpkit/smtpkit/smtp"
)

// scriptCase is a transcript run against a fresh server in each of modes.
type scriptCase struct {
	name    string
	modes   []mode // nil means smtpModes
	server  func(*Server)
	backend func(*backend)
	script  string
	check   func(t *testing.T, m mode, b *backend)
	serves  bool // afterwards, a new client must be served
}

func runScripts(t *testing.T, cases []scriptCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			modes := tc.modes
			if modes == nil {
				modes = smtpModes
			}
			inModes(t, modes, func(t *testing.T, m mode) {
				b := newBackend(t)
				if tc.backend != nil {
					tc.backend(b)
				}
				srv := &Server{Handler: b}
				if tc.server != nil {
					tc.server(srv)
				}
				h := serve(t, m, srv)
				c := h.dial()
				c.run(tc.script)
				if tc.check != nil {
					tc.check(t, m, b)
				}
				if tc.serves {
					h.checkServes()
				}
			})
		})
	}
}

func TestStateMachine(t *testing.T) {
	t.Parallel()
	runScripts(t, []scriptCase{{
		name: "commands before hello",
		script: `
			C: MAIL FROM:<a@example.com>
			S: 503 Say HELO/EHLO first
			C: RCPT TO:<b@example.com>
			S: 503 Need MAIL before RCPT
			C: DATA
			S: 503 Need MAIL command
			# The chunk is consumed, never read as a command.
			C: BDAT 4 LAST
			W: RSET
			S: 503 Need MAIL command
			C: AUTH PLAIN
			S: 502 AUTH not available
			C: NOOP
			S: 250 OK
			C: RSET
			S: 250 OK
			C: HELP
			S: 214 See RFC 5321
			C: FOO bar
			S: 500 Command not recognized
			C: LHLO client.test
			S: 500 Command not recognized
			C: EHLO client.test
			S: 250-mx.test greets client.test
			C: QUIT
			S: 221 2.0.0 mx.test Bye
			S: EOF
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equalSlices(t, "events", b.sessionEvents(m), []string{"hello client.test", "close"})
		},
	}, {
		name: "enhanced codes after EHLO, not after HELO",
		script: `
			C: HELO client.test
			S: 250 mx.test
			C: NOOP
			S: 250 OK
			C: MAIL FROM:<a@example.com
			S: 501 Invalid sender address syntax
			C: EHLO client.test
			S: 250-mx.test greets client.test
			C: NOOP
			S: 250 2.0.0 OK
			C: MAIL FROM:<a@example.com
			S: 501 5.1.7 Invalid sender address syntax
			C: HELO client.test
			S: 250 mx.test
			C: NOOP
			S: 250 OK
			C: QUIT
			S: 221 mx.test Bye
			S: EOF
		`,
	}, {
		name: "out of sequence",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: RCPT TO:<b@example.com>
			S: 503 5.5.1 Need MAIL before RCPT
			C: DATA
			S: 503 5.5.1 Need MAIL command
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0 OK
			C: MAIL FROM:<a@example.com>
			S: 503 5.5.1 Nested MAIL command
			C: DATA
			S: 503 5.5.1 Need RCPT command
			C: RCPT TO:<reject@example.com>
			S: 550 5.1.1 No such user here
			C: DATA
			S: 554 5.5.1 No valid recipients
			C: BDAT 5 LAST
			W: hello
			S: 554 5.5.1 No valid recipients
			C: RSET
			S: 250 2.0.0 OK
			C: DATA
			S: 503 5.5.1 Need MAIL command
			C: QUIT
			S: 221 2.0.0
			S: EOF
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equalSlices(t, "events", b.sessionEvents(m), []string{
				"hello client.test", "mail <a@example.com>", "rcpt <reject@example.com>", "reset", "close"})
		},
	}, {
		name:   "syntax errors",
		server: func(s *Server) { s.MaxErrors = 100 },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com
			S: 501 5.1.7 Invalid sender address syntax
			C: MAIL FROM:<a@@example.com>
			S: 501 5.1.7
			C: MAIL TO:<a@example.com>
			S: 501 5.1.7
			C: MAIL FROM:<postmaster>
			S: 501 5.1.7
			C: MAIL FROM:<a@example.com> SIZE=abc
			S: 501 5.5.4 Invalid SIZE
			C: MAIL FROM:<a@example.com> =x
			S: 501 5.5.4 Malformed parameter
			C: MAIL FROM:<a@example.com> SIZE=1 SIZE=2
			S: 501 5.5.4 Duplicate parameter SIZE
			C: MAIL FROM:<a@example.com> BODY=9BIT
			S: 501 5.5.4 Invalid BODY
			C: MAIL FROM:<a@example.com> SMTPUTF8=yes
			S: 501 5.5.4
			C: MAIL FROM:<a@example.com> FOO=bar
			S: 555 5.5.4 Unsupported parameter FOO
			C: MAIL FROM:<a@example.com> SIZE=10240001
			S: 552 5.3.4 Message size exceeds fixed limit
			C: MAIL FROM:<a@example.com> SIZE=10240000
			S: 250 2.1.0
			C: RCPT TO:<b@example.com
			S: 501 5.1.3 Invalid recipient address syntax
			C: RCPT TO:<>
			S: 501 5.1.3
			C: RCPT TO:<b>
			S: 501 5.1.3
			C: RCPT TO:<b@[192.0.2.300]>
			S: 501 5.1.3
			C: RCPT TO:<b@example.com> FOO
			S: 555 5.5.4 Unsupported parameter FOO
			C: RCPT TO:<b@example.com> SIZE=10
			S: 555 5.5.4
			C: DATA now
			S: 501 5.5.4
			C: RSET now
			S: 501 5.5.4
			C: EHLO
			S: 501 5.5.4
			C: EHLO two words
			S: 501 5.5.4
			C: HELO
			S: 501 5.5.4
			C: VRFY
			S: 501 5.5.4
			C: STARTTLS please
			S: 50
			# The transaction survived all of that.
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: .
			S: 250 2.0.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equal(t, "messages", len(b.Messages()), 1)
		},
	}, {
		name: "SMTPUTF8",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<jörg@exämple.de>
			S: 553 5.6.7 Non-ASCII address needs SMTPUTF8
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<用户@例子.广告>
			S: 553 5.6.7
			C: RSET
			S: 250 2.0.0
			C: MAIL FROM:<jörg@exämple.de> SMTPUTF8
			S: 250 2.1.0
			C: RCPT TO:<用户@例子.广告>
			S: 250 2.1.5
			C: RCPT TO:<"quoted ü"@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: Subject: Grüße
			C: .
			S: 250 2.0.0
			C: QUIT
			S: 221
			S: EOF
		`,
		check: func(t *testing.T, m mode, b *backend) {
			msgs := b.Messages()
			if len(msgs) != 1 {
				t.Fatalf("%d messages", len(msgs))
			}
			equal(t, "from", msgs[0].from, smtp.Address{Local: "jörg", Domain: "exämple.de"})
			equal(t, "rcpt", msgs[0].rcpts[0].Address, smtp.Address{Local: "用户", Domain: "例子.广告"})
			equal(t, "rcpt", msgs[0].rcpts[1].Address, smtp.Address{Local: "quoted ü", Domain: "example.com"})
			equal(t, "UTF8", msgs[0].opts.UTF8, true)
			equal(t, "body", msgs[0].body, "Subject: Grüße\r\n")
		},
	}, {
		name: "BODY parameter",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com> BODY=8BITMIME
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			W: caf\xc3\xa9 \xff\x80\r\n.\r\n
			S: 250 2.0.0
			C: MAIL FROM:<a@example.com> body=binarymime
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 503 5.5.1 BODY=BINARYMIME requires BDAT
			C: BDAT 6 LAST
			W: \x00\xff\n\r.\n
			S: 250 2.0.0
			C: MAIL FROM:<a@example.com> BODY=7BIT
			S: 250 2.1.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			msgs := b.Messages()
			if len(msgs) != 2 {
				t.Fatalf("%d messages", len(msgs))
			}
			equal(t, "body 1", msgs[0].opts.Body, smtp.Body8BitMIME)
			equal(t, "body 1", msgs[0].body, "caf\xc3\xa9 \xff\x80\r\n")
			equal(t, "body 2", msgs[1].opts.Body, smtp.BodyBinaryMIME)
			equal(t, "body 2", msgs[1].body, "\x00\xff\n\r.\n")
		},
	}, {
		name: "RSET, NOOP, HELP",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: NOOP anything goes
			S: 250 2.0.0 OK
			C: HELP MAIL
			S: 214 2.0.0
			C: RSET
			S: 250 2.0.0 OK
			C: RCPT TO:<b@example.com>
			S: 503 5.5.1
			C: RSET
			S: 250 2.0.0 OK
			C: QUIT
			S: 221 2.0.0
			S: EOF
		`,
		check: func(t *testing.T, m mode, b *backend) {
			// Reset ends a transaction; an RSET outside one has nothing to end.
			equalSlices(t, "events", b.sessionEvents(m), []string{
				"hello client.test", "mail <a@example.com>", "rcpt <b@example.com>", "reset", "close"})
		},
	}, {
		name: "EHLO mid-transaction resets it",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: EHLO client.test
			S: 250-mx.test
			C: RCPT TO:<b@example.com>
			S: 503 5.5.1
		`,
		check: func(t *testing.T, m mode, b *backend) {
			equalSlices(t, "events", b.sessionEvents(m), []string{
				"hello client.test", "mail <a@example.com>", "reset", "hello client.test"})
		},
	}, {
		name: "hook errors become replies",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: MAIL FROM:<reject@example.com>
			S: 550 5.1.1 No such user here
			C: MAIL FROM:<defer@example.com>
			S: 451 4.2.1 Mailbox busy
			C: MAIL FROM:<broken@example.com>
			S: 451 4.3.0 Temporary local problem
			C: MAIL FROM:<panic@example.com>
			S: 451 4.3.0
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: RCPT TO:<reject@example.com>
			S: 550 5.1.1
			C: RCPT TO:<defer@example.com>
			S: 451 4.2.1
			C: RCPT TO:<broken@example.com>
			S: 451 4.3.0
			C: RCPT TO:<panic@example.com>
			S: 451 4.3.0
			C: RCPT TO:<b@example.com>
			S: 250 2.1.5
			C: DATA
			S: 354
			C: Subject: survived
			C: .
			S: 250 2.0.0
		`,
		check: func(t *testing.T, m mode, b *backend) {
			msgs := b.Messages()
			if len(msgs) != 1 || len(msgs[0].rcpts) != 1 {
				t.Fatalf("messages: %+v", msgs)
			}
		},
	}, {
		name: "VRFY and EXPN without VerifySession",
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: VRFY postmaster
			S: 252 2.5.0 Cannot verify
			C: EXPN staff
			S: 252 2.5.0 Cannot verify
			C: EXPN
			S: 501 5.5.4
		`,
	}, {
		name:    "VRFY and EXPN with VerifySession",
		backend: func(b *backend) { b.verify = true },
		script: `
			C: EHLO client.test
			S: 250-mx.test
			C: VRFY jo
			S: 250 2.1.5 Jo User <jo@example.com>
			C: VRFY nobody
			S: 550 5.1.1 No such user here
			C: EXPN staff
			S: 250-2.1.5 <a@example.com>\n250 2.1.5 <b@example.com>
		`,
	}, {
		name:    "refused HELO leaves the session unnamed",
		backend: func(b *backend) { b.onHello = helloPolicy },
		script: `
			C: EHLO bad.example
			S: 550 Go away
			C: MAIL FROM:<a@example.com>
			S: 503 Say HELO/EHLO first
			C: HELO bad.example
			S: 550 Go away
			C: EHLO good.example
			S: 250-mx.test greets good.example
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
			C: EHLO bad.example
			S: 550 5.7.1 Go away
		`,
	}, {
		name:    "LMTP wants LHLO",
		modes:   []mode{modeLMTP},
		backend: func(b *backend) {},
		script: `
			W: EHLO client.test\r\n
			S: 500 This is an LMTP server, use LHLO
			W: HELO client.test\r\n
			S: 500 This is an LMTP server
			C: MAIL FROM:<a@example.com>
			S: 503 Say LHLO first
			C: LHLO client.test
			S: 250-mx.test greets client.test
			C: MAIL FROM:<a@example.com>
			S: 250 2.1.0
		`,
	}})
}

func helloPolicy(ctx context.Context, name string) error {
	if name == "bad.example" {
		return smtp.Reject("Go away")
	}
	return nil
}

func TestEHLOAdvertisement(t *testing.T) {
	t.Parallel()
	base := []string{"PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN"}
	with := func(extra ...string) []string { return append(append([]string(nil), base...), extra...) }
	srvTLS, _ := testTLS()
	cases := []struct {
		name   string
		mode   mode
		server func(*Server)
		auth   bool
		want   []string
		script string // runs after EHLO
	}{
		{name: "plain", mode: modePlain, want: base},
		{name: "LMTP", mode: modeLMTP, want: base},
		{name: "STARTTLS offered", mode: modePlain, server: func(s *Server) { s.TLSConfig = srvTLS }, want: with("STARTTLS")},
		{name: "after STARTTLS", mode: modeStartTLS, want: base, script: `
			C: STARTTLS
			S: 503 5.5.1 TLS already active
		`},
		{name: "implicit TLS", mode: modeTLS, want: base, script: `
			C: STARTTLS
			S: 503 5.5.1 TLS already active
		`},
		{name: "no STARTTLS without TLSConfig", mode: modePlain, want: base, script: `
			C: STARTTLS
			S: 502 5.5.1 STARTTLS not available
		`},
		{name: "STARTTLS disabled", mode: modePlain, server: func(s *Server) { s.TLSConfig = srvTLS; s.DisableExtensions = ExtStartTLS }, want: base, script: `
			C: STARTTLS
			S: 502 5.5.1
		`},
		{name: "no AUTH in plaintext", mode: modePlain, auth: true, want: base, script: `
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 538 5.7.11 Encryption required
		`},
		{name: "AUTH in plaintext when allowed", mode: modePlain, auth: true, server: func(s *Server) { s.AllowInsecureAuth = true }, want: with("AUTH PLAIN LOGIN"), script: `
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 235 2.7.0
		`},
		{name: "AUTH under implicit TLS", mode: modeTLS, auth: true, want: with("AUTH PLAIN LOGIN")},
		{name: "AUTH after STARTTLS", mode: modeStartTLS, auth: true, want: with("AUTH PLAIN LOGIN")},
		{name: "STARTTLS and AUTH before TLS", mode: modePlain, auth: true, server: func(s *Server) { s.TLSConfig = srvTLS }, want: with("STARTTLS")},
		{name: "AUTH disabled", mode: modeTLS, auth: true, server: func(s *Server) { s.DisableExtensions = ExtAuth }, want: base, script: `
			C: AUTH PLAIN AHVzZXIAc2VjcmV0
			S: 502 5.5.1 AUTH not available
		`},
		{name: "SIZE follows MaxMessageBytes", mode: modePlain, server: func(s *Server) { s.MaxMessageBytes = 5000 },
			want: []string{"PIPELINING", "SIZE 5000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN"}, script: `
			C: MAIL FROM:<a@example.com> SIZE=5001
			S: 552 5.3.4
		`},
		{name: "BINARYMIME disabled", mode: modePlain, server: func(s *Server) { s.DisableExtensions = ExtBinaryMIME },
			want: []string{"PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "DSN"}, script: `
			C: MAIL FROM:<a@example.com> BODY=BINARYMIME
			S: 555 5.5.4
			C: MAIL FROM:<a@example.com> BODY=8BITMIME
			S: 250 2.1.0
		`},
		{name: "8BITMIME disabled, BINARYMIME on", mode: modePlain, server: func(s *Server) { s.DisableExtensions = Ext8BitMIME },
			want: []string{"PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN"}, script: `
			C: MAIL FROM:<a@example.com> BODY=8BITMIME
			S: 555 5.5.4
			C: MAIL FROM:<a@example.com> BODY=BINARYMIME
			S: 250 2.1.0
		`},
		{name: "everything disabled", mode: modePlain,
			server: func(s *Server) {
				s.DisableExtensions = ExtPipelining | ExtSize | Ext8BitMIME | ExtEnhancedStatusCodes | ExtSMTPUTF8 | ExtChunking | ExtDSN
			},
			want: nil, script: `
			C: NOOP
			S: 250 OK
			C: MAIL FROM:<a@example.com> SIZE=10
			S: 555 Unsupported parameter SIZE
			C: MAIL FROM:<a@example.com> BODY=8BITMIME
			S: 555
			C: MAIL FROM:<a@example.com> BODY=BINARYMIME
			S: 555
			C: MAIL FROM:<a@example.com> SMTPUTF8
			S: 555
			C: MAIL FROM:<a@example.com> RET=FULL
			S: 555
			C: MAIL FROM:<a@example.com>
			S: 250 OK
			C: RCPT TO:<b@example.com> NOTIFY=NEVER
			S: 555
			C: RCPT TO:<b@example.com>
			S: 250 OK
			# The chunk is consumed, never read as commands.
			C: BDAT 6 LAST
			W: RSET\r\n
			S: 502 BDAT not available
			C: DATA
			S: 354
			C: .
			S: 250 OK
		`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t)
			b.auth = tc.auth
			srv := &Server{Handler: b}
			if tc.server != nil {
				tc.server(srv)
			}
			c := serve(t, tc.mode, srv).dial()
			c.write("EHLO client.test\r\n")
			if tc.mode == modeLMTP {
				c.expect("500")
				c.write("LHLO client.test\r\n")
			}
			lines := strings.Split(c.expect("250"), "\n")
			equal(t, "first line", lines[0][4:], "mx.test greets client.test")
			var got []string
			for _, l := range lines[1:] {
				got = append(got, l[4:])
			}
			equalSlices(t, "extensions", got, tc.want)
			c.run(tc.script)
		})
	}
}

func TestAddressForms(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, cmd, reply string
		want             smtp.Address
	}{
		{"null reverse-path", "MAIL FROM:<>", "250 2.1.0", smtp.Address{}},
		{"null reverse-path with params", "MAIL FROM:<> BODY=8BITMIME", "250 2.1.0", smtp.Address{}},
		{"plain", "MAIL FROM:<user@example.com>", "250 2.1.0", smtp.Address{Local: "user", Domain: "example.com"}},
		{"lower case verb", "mail from:<user@example.com>", "250 2.1.0", smtp.Address{Local: "user", Domain: "example.com"}},
		{"space after colon", "MAIL FROM: <user@example.com>", "250 2.1.0", smtp.Address{Local: "user", Domain: "example.com"}},
		{"no angle brackets", "MAIL FROM:user@example.com", "250 2.1.0", smtp.Address{Local: "user", Domain: "example.com"}},
		{"quoted local part", `MAIL FROM:<"john doe"@example.com>`, "250 2.1.0", smtp.Address{Local: "john doe", Domain: "example.com"}},
		{"quoted pair", `MAIL FROM:<"a\"b\\c>"@example.com>`, "250 2.1.0", smtp.Address{Local: `a"b\c>`, Domain: "example.com"}},
		{"IPv4 literal", "MAIL FROM:<user@[192.0.2.1]>", "250 2.1.0", smtp.Address{Local: "user", Domain: "[192.0.2.1]"}},
		{"IPv6 literal", "MAIL FROM:<user@[IPv6:2001:db8::1]>", "250 2.1.0", smtp.Address{Local: "user", Domain: "[IPv6:2001:db8::1]"}},
		{"source route", "MAIL FROM:<@relay.example,@hop.example:user@example.com>", "250 2.1.0", smtp.Address{Local: "user", Domain: "example.com"}},
		{"UTF-8 with SMTPUTF8", "MAIL FROM:<jörg@exämple.de> SMTPUTF8", "250 2.1.0", smtp.Address{Local: "jörg", Domain: "exämple.de"}},
		{"bad IPv4 literal", "MAIL FROM:<user@[192.0.2.256]>", "501 5.1.7", smtp.Address{}},
		{"IPv6 literal with zone", "MAIL FROM:<user@[IPv6:fe80::1%eth0]>", "501 5.1.7", smtp.Address{}},
		{"local part too long", "MAIL FROM:<" + strings.Repeat("a", 65) + "@example.com>", "501 5.1.7 Path too long", smtp.Address{}},
		{"bare postmaster as sender", "MAIL FROM:<postmaster>", "501 5.1.7", smtp.Address{}},
		{"bad source route", "MAIL FROM:<@:user@example.com>", "501 5.1.7", smtp.Address{}},
		{"bare postmaster", "RCPT TO:<postmaster>", "250 2.1.5", smtp.Address{Local: "postmaster"}},
		{"bare Postmaster", "RCPT TO:<PostMaster>", "250 2.1.5", smtp.Address{Local: "PostMaster"}},
		{"recipient IPv6 literal", "RCPT TO:<user@[IPv6:::1]>", "250 2.1.5", smtp.Address{Local: "user", Domain: "[IPv6:::1]"}},
		{"recipient source route", "RCPT TO:<@hop.example:user@example.com>", "250 2.1.5", smtp.Address{Local: "user", Domain: "example.com"}},
		{"recipient quoted", `RCPT TO:<"x y"@example.com>`, "250 2.1.5", smtp.Address{Local: "x y", Domain: "example.com"}},
		{"null forward-path", "RCPT TO:<>", "501 5.1.3", smtp.Address{}},
		{"domainless recipient", "RCPT TO:<user>", "501 5.1.3", smtp.Address{}},
		{"UTF-8 recipient without SMTPUTF8", "RCPT TO:<jörg@exämple.de>", "553 5.6.7", smtp.Address{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend(t)
			c := serve(t, modePlain, &Server{Handler: b}).dial()
			c.run(`
				C: EHLO client.test
				S: 250-mx.test
			`)
			n := 0
			if strings.HasPrefix(tc.cmd, "RCPT") {
				c.run(`
					C: MAIL FROM:<sender@example.com>
					S: 250 2.1.0
				`)
				n = 1
			}
			c.write(tc.cmd + "\r\n")
			c.expect(tc.reply)
			addrs := b.Addrs()
			if tc.reply[0] != '2' {
				equal(t, "hook calls", len(addrs), n)
				return
			}
			if len(addrs) != n+1 {
				t.Fatalf("hook got %v", addrs)
			}
			equal(t, "address", addrs[n], tc.want)
		})
	}
}

func TestDSNParameters(t *testing.T) {
	t.Parallel()
	b := newBackend(t)
	c := serve(t, modePlain, &Server{Handler: b}).dial()
	c.run(`
		C: EHLO client.test
		S: 250-mx.test
		C: MAIL FROM:<a@example.com> RET=ALL
		S: 501 5.5.4 Invalid RET
		C: MAIL FROM:<a@example.com> ENVID=a+zz
		S: 501 5.5.4 Invalid ENVID
		C: MAIL FROM:<a@example.com> ENVID=` + strings.Repeat("x", 101) + `
		S: 501 5.5.4 Invalid ENVID
		C: MAIL FROM:<a@example.com> RET=FULL RET=HDRS
		S: 501 5.5.4 Duplicate parameter RET
		C: MAIL FROM:<a@example.com> ret=hdrs ENVID=QQ+2B314+3D SIZE=1000 BODY=8BITMIME SMTPUTF8
		S: 250 2.1.0
		C: RCPT TO:<x@example.com> NOTIFY=NEVER,SUCCESS
		S: 501 5.5.4 Invalid NOTIFY
		C: RCPT TO:<x@example.com> NOTIFY=SUCCESS,SUCCESS
		S: 501 5.5.4
		C: RCPT TO:<x@example.com> NOTIFY=SUCCESS NOTIFY=DELAY
		S: 501 5.5.4 Duplicate parameter NOTIFY
		C: RCPT TO:<x@example.com> ORCPT=rfc822
		S: 501 5.5.4 Invalid ORCPT
		C: RCPT TO:<x@example.com> ORCPT=;x@example.com
		S: 501 5.5.4
		C: RCPT TO:<x@example.com> ORCPT=rfc822;x+4
		S: 501 5.5.4
		C: RCPT TO:<x@example.com> ORCPT=rfc822;a@example.com ORCPT=rfc822;b@example.com
		S: 501 5.5.4 Duplicate parameter ORCPT
		C: RCPT TO:<b@example.com> NOTIFY=success,failure ORCPT=rfc822;b+40example.com
		S: 250 2.1.5
		C: RCPT TO:<c@example.com> NOTIFY=NEVER ORCPT=utf-8;c+2Bd@example.com
		S: 250 2.1.5
		C: RCPT TO:<d@example.com> NOTIFY=DELAY
		S: 250 2.1.5
		C: RCPT TO:<e@example.com>
		S: 250 2.1.5
		C: DATA
		S: 354
		C: .
		S: 250 2.0.0
	`)
	msgs := b.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	wantMail := smtp.MailOptions{Size: 1000, Body: smtp.Body8BitMIME, UTF8: true, Return: smtp.ReturnHeaders, EnvelopeID: "QQ+314="}
	if !reflect.DeepEqual(m.opts, wantMail) {
		t.Errorf("mail options %+v, want %+v", m.opts, wantMail)
	}
	wantRcpt := []Recipient{
		{smtp.Address{Local: "b", Domain: "example.com"}, smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.NotifySuccess, smtp.NotifyFailure}, OriginalRecipientType: "rfc822", OriginalRecipient: "b@example.com"}},
		{smtp.Address{Local: "c", Domain: "example.com"}, smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.NotifyNever}, OriginalRecipientType: "utf-8", OriginalRecipient: "c+d@example.com"}},
		{smtp.Address{Local: "d", Domain: "example.com"}, smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.NotifyDelay}}},
		{smtp.Address{Local: "e", Domain: "example.com"}, smtp.RcptOptions{}},
	}
	if !reflect.DeepEqual(m.rcpts, wantRcpt) {
		t.Errorf("recipients\n%+v\nwant\n%+v", m.rcpts, wantRcpt)
	}
}

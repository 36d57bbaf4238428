package server

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/smtpkit/smtpkit/smtp"
	"github.com/smtpkit/smtpkit/smtp/wire"
)

// ErrAuthFailed is what AuthPassword returns (or wraps) for wrong
// credentials: the client gets 535 5.7.8. Any other untyped error is taken
// as a failure to check them (a database down, say) and gets 454 4.7.0,
// so a client never gives up on a password that was never checked.
var ErrAuthFailed = errors.New("authentication failed")

// DefaultMaxAuthFailures is the number of failed AUTH attempts after which
// a connection is closed.
const DefaultMaxAuthFailures = 3

func (s *session) authMechanisms() []string {
	if !s.srv.enabled(ExtAuth) || s.sess == nil {
		return nil
	}
	var m []string
	if s.pwdS != nil {
		m = append(m, "PLAIN", "LOGIN")
	}
	if s.saslS != nil {
		m = append(m, s.saslS.AuthMechanisms()...)
	}
	return m
}

// authAllowed: RFC 8314 and RFC 4954 4: no credentials over plaintext
// unless the operator explicitly allows it.
func (s *session) authAllowed() bool { return s.conn.tls != nil || s.srv.AllowInsecureAuth }

// authPending reports whether the next command may be an AUTH that
// succeeds, cheaply: it runs before every command.
func (s *session) authPending() bool {
	if s.conn.identity != "" || !s.conn.esmtp || !s.authAllowed() || !s.srv.enabled(ExtAuth) || s.sess == nil {
		return false
	}
	return s.pwdS != nil || s.saslS != nil
}

func (s *session) cmdAuth(arg string) {
	mechs := s.authMechanisms()
	switch {
	case len(mechs) == 0:
		s.reply(502, smtp.EnhancedCode{5, 5, 1}, "AUTH not available")
		return
	case !s.conn.esmtp:
		s.reply(503, smtp.EnhancedCode{5, 5, 1}, "Say EHLO first")
		return
	case !s.authAllowed():
		s.reply(538, smtp.EnhancedCode{5, 7, 11}, "Encryption required for requested authentication mechanism")
		return
	case s.conn.identity != "":
		s.reply(503, smtp.EnhancedCode{5, 5, 1}, "Already authenticated")
		return
	case s.from != nil:
		s.reply(503, smtp.EnhancedCode{5, 5, 1}, "AUTH not allowed during a mail transaction")
		return
	}
	mech, ir, hasIR := strings.Cut(arg, " ")
	mech = strings.ToUpper(mech)
	known := false
	for _, m := range mechs {
		known = known || strings.EqualFold(m, mech)
	}
	if !known {
		s.reply(504, smtp.EnhancedCode{5, 5, 4}, "Unrecognized authentication mechanism")
		return
	}

	var who string
	var srv sasl.Server
	var identity func() string
	switch ps, isPwd := s.pwdS, s.pwdS != nil; {
	case isPwd && mech == "PLAIN":
		srv = sasl.NewPlainServer(func(id, user, pass string) error {
			who = user
			return asHookErr(s.callHook(func() error { return ps.AuthPassword(s.ctx, id, user, pass) }))
		})
	case isPwd && mech == "LOGIN":
		srv = &loginServer{auth: func(user, pass string) error {
			who = user
			return asHookErr(s.callHook(func() error { return ps.AuthPassword(s.ctx, "", user, pass) }))
		}}
	default:
		ss := s.saslS
		if ss == nil {
			s.reply(504, smtp.EnhancedCode{5, 5, 4}, "Unrecognized authentication mechanism")
			return
		}
		var err error
		if herr := s.callHook(func() error { srv, identity, err = ss.AuthSASL(s.ctx, mech); return err }); herr != nil {
			s.replyErr(s.hookErr(herr))
			return
		}
	}

	var resp []byte
	if hasIR {
		// RFC 4954 4: "=" is an empty initial response.
		if ir != "=" {
			b, err := base64.StdEncoding.DecodeString(ir)
			if err != nil {
				s.reply(501, smtp.EnhancedCode{5, 5, 2}, "Invalid base64 in initial response")
				return
			}
			resp = b
		} else {
			resp = []byte{}
		}
	}
	for {
		challenge, done, err := srv.Next(resp)
		if err != nil {
			s.authFailed(err, mech, who)
			return
		}
		if done {
			if identity != nil {
				who = identity()
			}
			if who == "" {
				who = mech
			}
			s.conn.identity = who
			s.reply(235, smtp.EnhancedCode{2, 7, 0}, "Authentication successful")
			return
		}
		s.bw.Reply(334, smtp.EnhancedCode{}, base64.StdEncoding.EncodeToString(challenge))
		line, err := s.br.ReadLine(authLineLength)
		if err == wire.ErrLineTooLong {
			s.reply(500, smtp.EnhancedCode{5, 5, 6}, "Authentication exchange line is too long")
			return
		}
		if err != nil {
			s.readFailed(err)
			s.closing = true
			return
		}
		if string(line) == "*" {
			s.reply(501, smtp.EnhancedCode{5, 7, 0}, "Authentication cancelled")
			return
		}
		resp, err = base64.StdEncoding.DecodeString(string(line))
		if err != nil {
			s.reply(501, smtp.EnhancedCode{5, 5, 2}, "Invalid base64 in response")
			return
		}
	}
}

func (s *session) authFailed(err error, mech, user string) {
	var e *smtp.Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, ErrAuthFailed) || !isHookErr(err):
		e = smtp.NewError(535, smtp.EnhancedCode{5, 7, 8}, "Authentication credentials invalid")
	default:
		e = smtp.Wrap(454, smtp.EnhancedCode{4, 7, 0}, "Temporary authentication failure", err)
	}
	s.authFailures++
	// Never log the password; the user name helps spot credential stuffing.
	s.srv.logger().Warn("auth failed", "id", s.conn.ID, "remote", s.conn.RemoteAddr.String(), "mech", mech, "user", user, "reply", e.Code, "cause", err)
	s.replyErr(e)
	if s.authFailures >= limit(s.srv.MaxAuthFailures, DefaultMaxAuthFailures) {
		s.closeOverLimit("authentication failures")
	}
}

// hookErr marks errors that came from the user's authenticator, as opposed
// to the SASL mechanism rejecting a malformed exchange.
type hookError struct{ err error }

func (h hookError) Error() string { return h.err.Error() }
func (h hookError) Unwrap() error { return h.err }

func asHookErr(err error) error {
	if err == nil {
		return nil
	}
	return hookError{err}
}

func isHookErr(err error) bool {
	var h hookError
	return errors.As(err, &h)
}

// loginServer is the LOGIN mechanism (draft-murchison-sasl-login): two
// challenges, "Username:" and "Password:". go-sasl ships only its client.
type loginServer struct {
	auth  func(user, pass string) error
	user  string
	state int
}

func (l *loginServer) Next(resp []byte) ([]byte, bool, error) {
	switch l.state {
	case 0:
		l.state = 1
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		l.user = string(resp)
		l.state = 2
		return []byte("Password:"), false, nil
	case 2:
		l.state = 3
		return nil, true, l.auth(l.user, string(resp))
	}
	return nil, false, errors.New("unexpected LOGIN response")
}

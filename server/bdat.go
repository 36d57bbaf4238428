package server

import (
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/smtpkit/smtpkit/smtp"
	"github.com/smtpkit/smtpkit/smtp/wire"
)

// parseBDAT parses "size [LAST]" (RFC 3030 2).
func parseBDAT(arg string) (size int64, last bool, ok bool) {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 {
		return 0, false, false
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || n < 0 || n > maxBDATChunk {
		return 0, false, false
	}
	if len(f) == 2 {
		if !strings.EqualFold(f[1], "LAST") {
			return 0, false, false
		}
		last = true
	}
	return n, last, true
}

// errBDATInterrupted ends a body when a command other than BDAT arrives
// between chunks: the transaction is abandoned and that command runs.
var errBDATInterrupted = errors.New("BDAT sequence interrupted")

// bdatReader streams a body sent as BDAT chunks (RFC 3030). Between chunks
// it acknowledges the one just read and reads the next BDAT command itself,
// so the session's hook sees one continuous body however it was cut.
type bdatReader struct {
	s         *session
	remaining int64 // bytes left in the current chunk
	chunk     int64 // size of the current chunk
	last      bool
	size      int64
	max       int64
	err       error         // sticky: too big
	fatal     error         // the connection or the sequence broke
	next      *wire.Command // the command that interrupted the sequence
}

func (b *bdatReader) Read(p []byte) (int, error) {
	for b.remaining == 0 {
		if err := b.advance(); err != nil {
			return 0, err
		}
	}
	n := int64(len(p))
	if n > b.remaining {
		n = b.remaining
	}
	buf, err := b.s.br.Next(int(n))
	if err != nil {
		b.fatal = err
		return 0, err
	}
	b.remaining -= int64(len(buf))
	b.size += int64(len(buf))
	if b.size > b.max {
		b.err = wire.ErrTooBig
		return 0, b.err
	}
	return copy(p, buf), nil
}

// WriteTo hands the destination slices of the read buffer directly.
func (b *bdatReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		for b.remaining == 0 {
			if err := b.advance(); err == io.EOF {
				return total, nil
			} else if err != nil {
				return total, err
			}
		}
		buf, err := b.s.br.Next(int(min(b.remaining, 1<<30)))
		if err != nil {
			b.fatal = err
			return total, err
		}
		b.remaining -= int64(len(buf))
		b.size += int64(len(buf))
		if b.size > b.max {
			b.err = wire.ErrTooBig
			return total, b.err
		}
		n, err := w.Write(buf)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// advance moves past a finished chunk: at LAST it reports io.EOF,
// otherwise it acknowledges the chunk and reads the next BDAT.
func (b *bdatReader) advance() error {
	switch {
	case b.fatal != nil:
		return b.fatal
	case b.err != nil:
		return b.err
	case b.last:
		return io.EOF
	}
	s := b.s
	s.reply(250, smtp.EnhancedCode{2, 0, 0}, strconv.FormatInt(b.chunk, 10)+" octets received")
	line, err := s.br.ReadLine(orPos(s.srv.MaxLineLength, DefaultMaxLineLength))
	if err == wire.ErrLineTooLong {
		b.next = &wire.Command{Verb: "\x00toolong"}
		b.fatal = errBDATInterrupted
		return b.fatal
	}
	if err != nil {
		b.fatal = err
		return err
	}
	cmd, err := wire.ParseCommand(line)
	if err != nil || cmd.Verb != "BDAT" {
		b.next = &cmd
		if err != nil {
			b.next = &wire.Command{Verb: "\x00invalid"}
		}
		b.fatal = errBDATInterrupted
		return b.fatal
	}
	size, last, ok := parseBDAT(cmd.Arg)
	if !ok {
		b.next = &wire.Command{Verb: "\x00badbdat"}
		b.fatal = errBDATInterrupted
		return b.fatal
	}
	b.remaining, b.chunk, b.last = size, size, last
	return nil
}

// discardChunk consumes what is left of the current chunk.
func (b *bdatReader) discardChunk() error {
	for b.remaining > 0 {
		buf, err := b.s.br.Next(int(min(b.remaining, 1<<30)))
		if err != nil {
			b.fatal = err
			return err
		}
		b.remaining -= int64(len(buf))
	}
	return nil
}

// discard consumes n bytes of a chunk that cannot be used.
func (s *session) discard(n int64) error {
	b := &bdatReader{s: s, remaining: n}
	return b.discardChunk()
}

func (s *session) cmdBDAT(arg string) {
	size, last, ok := parseBDAT(arg)
	if !ok {
		s.badBDAT()
		return
	}
	// Whatever the reply, the chunk's bytes must be consumed: read as
	// commands they would let a client smuggle commands inside data.
	if !s.srv.enabled(ExtChunking) {
		s.reply(502, smtp.EnhancedCode{5, 5, 1}, "BDAT not available")
		s.discardOrClose(size)
		return
	}
	if !s.txReady() {
		s.discardOrClose(size)
		return
	}
	s.tc.readTimeout = orDur(s.srv.DataTimeout, DefaultDataTimeout)
	s.br.Grow(wire.BodyBufferSize)
	b := &bdatReader{s: s, remaining: size, chunk: size, last: last, max: s.srv.maxMessageBytes()}
	results := s.runData(b)

	// Finish the sequence. After a rejection or an oversized body, stop at
	// the end of this chunk (RFC 3030 2: the client sends no more BDAT
	// after an error reply); while any recipient may still take the message
	// (an LMTP session can refuse some and accept others), read through to
	// LAST, so that no success is sent for a body cut short.
	rejected := true
	for _, r := range results {
		if r == nil || isSuccess(r) {
			rejected = false
		}
	}
	rejected = rejected || b.err != nil
	if b.fatal == nil {
		if rejected {
			b.discardChunk()
		} else {
			for {
				if err := b.discardChunk(); err != nil {
					break
				}
				if err := b.advance(); err != nil {
					break
				}
			}
		}
	}
	s.tc.readTimeout = orDur(s.srv.ReadTimeout, DefaultReadTimeout)
	s.br.Release()
	s.bytesIn += b.size
	switch {
	case b.fatal == errBDATInterrupted:
		s.resetTx()
		next := b.next
		switch next.Verb {
		case "\x00invalid":
			s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Invalid command")
		case "\x00toolong":
			s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Line too long")
		case "\x00badbdat":
			s.badBDAT()
		default:
			s.dispatch(*next)
		}
		return
	case b.fatal != nil:
		s.readFailed(b.fatal)
		s.closing = true
		return
	}
	s.finishTx(bodyError(b.err), results)
}

// badBDAT answers a BDAT whose size cannot be read. Where its chunk ends
// is then unknowable, and reading the chunk's bytes as commands would let
// message data smuggle commands, so the connection is closed.
func (s *session) badBDAT() {
	s.replyFinal(501, smtp.EnhancedCode{5, 5, 4}, "Syntax: BDAT size [LAST], closing connection")
	s.endErr = errors.New("malformed BDAT")
	s.closing = true
}

func isSuccess(err error) bool {
	var e *smtp.Error
	return errors.As(err, &e) && e.Code >= 200 && e.Code < 300
}

func (s *session) discardOrClose(n int64) {
	if err := s.discard(n); err != nil {
		s.readFailed(err)
		s.closing = true
	}
}

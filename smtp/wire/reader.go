package wire

import (
	"bytes"
	"errors"
	"io"
	"sync"
)

// Sizes of the reader's buffer: small while reading commands, so that an idle
// session costs little memory, and larger while a body streams, so that a
// message takes few reads. The large buffers are pooled between sessions.
const (
	CommandBufferSize = 4096
	BodyBufferSize    = 8 * 1024
)

// Buffers are pooled: a connection costs garbage only for what it really
// keeps, which spares the collector work at every connection and keeps the
// heap, and so the resident size, flat under many short sessions.
var (
	bodyBuffers    = sync.Pool{New: func() any { b := make([]byte, BodyBufferSize); return &b }}
	commandBuffers = sync.Pool{New: func() any { b := make([]byte, CommandBufferSize); return &b }}
)

// Errors from the reader.
var (
	// ErrLineTooLong is returned after an over-long line has been consumed
	// up to and including its end, so the next read starts on a fresh line.
	ErrLineTooLong = errors.New("wire: line too long")
	// ErrDiscardLimit means an over-long line went on past any sane bound;
	// the connection cannot be resynchronised and must be closed.
	ErrDiscardLimit = errors.New("wire: line too long to resynchronise")
)

// maxDiscard bounds how much of one over-long command line is thrown away
// while looking for its end before the reader gives up on the connection.
const maxDiscard = 1 << 20

// Reader is a buffered reader of protocol lines over a connection.
type Reader struct {
	rd     io.Reader
	buf    []byte
	r, w   int
	err    error
	pooled *[]byte // the pooled body buffer in use, if any
	small  []byte  // an unpooled command buffer, kept while a larger one is in use
	cmdBuf *[]byte // the pooled command buffer in use, returned by Free
	grown  bool    // the pooled command buffer went back to its pool at Grow

	// BeforeFill, if set, runs before the reader blocks reading from the
	// connection. The server flushes its pending replies here, which is
	// exactly RFC 2920 3.2's rule: reply once the input buffer is empty.
	BeforeFill func() error
}

// NewReader returns a Reader over rd with a buffer of size bytes.
func NewReader(rd io.Reader, size int) *Reader {
	if size < 64 {
		size = 64
	}
	if size == CommandBufferSize {
		p := commandBuffers.Get().(*[]byte)
		return &Reader{rd: rd, buf: *p, cmdBuf: p}
	}
	return &Reader{rd: rd, buf: make([]byte, size)}
}

// Free returns the reader's buffers to their pools. The reader must not be
// used afterwards.
func (b *Reader) Free() {
	if b.pooled != nil {
		bodyBuffers.Put(b.pooled)
		b.pooled = nil
	}
	if b.cmdBuf != nil {
		commandBuffers.Put(b.cmdBuf)
		b.cmdBuf = nil
	}
	b.buf, b.small, b.rd, b.grown = nil, nil, nil, false
	b.r, b.w = 0, 0
}

// Reset makes the reader read from rd, discarding anything buffered. It is
// how STARTTLS throws away plaintext pipelined behind the command
// (CVE-2011-0411): nothing read before the handshake survives it.
func (b *Reader) Reset(rd io.Reader) {
	b.rd = rd
	b.r, b.w = 0, 0
	b.err = nil
}

// Buffered returns the number of bytes read from the connection but not yet
// consumed.
func (b *Reader) Buffered() int { return b.w - b.r }

// HasLine reports whether a whole line is already buffered, so that reading
// it will not block.
func (b *Reader) HasLine() bool { return bytes.IndexByte(b.buf[b.r:b.w], '\n') >= 0 }

// Grow makes the buffer at least n bytes, taking a pooled body buffer when
// that is large enough. Release gives it back. A pooled command buffer goes
// back to its pool meanwhile, so that a session streaming a body holds one
// buffer, not two (4 KiB less per session in DATA).
func (b *Reader) Grow(n int) {
	if n <= len(b.buf) {
		return
	}
	var nb []byte
	if n <= BodyBufferSize && b.pooled == nil {
		b.pooled = bodyBuffers.Get().(*[]byte)
		nb = *b.pooled
	} else {
		nb = make([]byte, n)
	}
	b.w = copy(nb, b.buf[b.r:b.w])
	b.r = 0
	switch {
	case b.cmdBuf != nil:
		commandBuffers.Put(b.cmdBuf)
		b.cmdBuf, b.grown = nil, true
	case !b.grown && b.small == nil:
		b.small = b.buf
	}
	b.buf = nb
}

// Release returns to a command-sized buffer if what is buffered fits in it,
// so that the large one can serve another session.
func (b *Reader) Release() {
	if !b.grown && b.small == nil {
		return
	}
	size := len(b.small)
	if b.grown {
		size = CommandBufferSize
	}
	if b.w-b.r > size {
		return
	}
	small := b.small
	if b.grown {
		b.cmdBuf = commandBuffers.Get().(*[]byte)
		small = *b.cmdBuf
	}
	b.w = copy(small, b.buf[b.r:b.w])
	b.r = 0
	b.buf, b.small, b.grown = small, nil, false
	if b.pooled != nil {
		bodyBuffers.Put(b.pooled)
		b.pooled = nil
	}
}

// fill reads more data into the buffer, moving unconsumed bytes to its
// start first. It returns an error only when nothing could be read.
func (b *Reader) fill() error {
	if b.err != nil {
		return b.err
	}
	if b.r > 0 {
		b.w = copy(b.buf, b.buf[b.r:b.w])
		b.r = 0
	}
	if b.w == len(b.buf) {
		return errBufferFull
	}
	if b.BeforeFill != nil {
		if err := b.BeforeFill(); err != nil {
			b.err = err
			return err
		}
	}
	for i := 0; i < 100; i++ {
		n, err := b.rd.Read(b.buf[b.w:])
		b.w += n
		if err != nil {
			b.err = err
		}
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	b.err = io.ErrNoProgress
	return b.err
}

var errBufferFull = errors.New("wire: buffer full")

// ReadLine returns the next line without its line ending (CRLF, or a bare
// LF, which command lines tolerate as most receivers do). The slice is valid
// until the next call. A line longer than max bytes, counting its CRLF, is
// consumed and reported as ErrLineTooLong. At the end of input without a
// complete line, it returns io.EOF or io.ErrUnexpectedEOF.
func (b *Reader) ReadLine(max int) ([]byte, error) {
	if max+1 > len(b.buf) {
		b.Grow(max + 1)
	}
	for {
		if i := bytes.IndexByte(b.buf[b.r:b.w], '\n'); i >= 0 {
			line := b.buf[b.r : b.r+i]
			b.r += i + 1
			if len(line)+1 > max { // counting the LF, as RFC 5321 counts the CRLF
				return nil, ErrLineTooLong
			}
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		}
		// Without an LF, max buffered bytes make a line of at least max+1.
		if n := b.w - b.r; n > 0 && n >= max {
			return nil, b.discardLine()
		}
		if err := b.fill(); err != nil {
			if err == io.EOF && b.w > b.r {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// discardLine throws input away up to and including the next LF.
func (b *Reader) discardLine() error {
	discarded := 0
	for {
		if i := bytes.IndexByte(b.buf[b.r:b.w], '\n'); i >= 0 {
			b.r += i + 1
			return ErrLineTooLong
		}
		discarded += b.w - b.r
		b.r = b.w
		if discarded > maxDiscard {
			return ErrDiscardLimit
		}
		if err := b.fill(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // we are in the middle of a line
			}
			return err
		}
	}
}

// Next returns up to n buffered bytes, reading from the connection only if
// nothing is buffered. The slice is valid until the next call.
func (b *Reader) Next(n int) ([]byte, error) {
	if b.r == b.w {
		if err := b.fill(); err != nil {
			return nil, err
		}
	}
	if avail := b.w - b.r; n > avail {
		n = avail
	}
	p := b.buf[b.r : b.r+n]
	b.r += n
	return p, nil
}

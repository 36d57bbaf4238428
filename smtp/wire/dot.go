package wire

import (
	"bytes"
	"errors"
	"io"
)

// Errors a body reader returns. ErrBareLineEnding is fatal for the
// connection; the others are reported once the whole body has been read, so
// the session stays in step with the client.
var (
	// ErrBareLineEnding is a CR or LF in DATA that is not part of a CRLF.
	// Receivers that accepted these as line endings let one message carry a
	// second, spoofed one (SMTP smuggling, CVE-2023-51764 and kin). After
	// it, where the client meant the data to end is unknowable, so the
	// session must reply and close.
	ErrBareLineEnding = errors.New("wire: bare CR or LF in message data")
	// ErrTooBig means the body went past its size limit; the rest was read
	// and thrown away.
	ErrTooBig = errors.New("wire: message too big")
	// ErrTextLineTooLong means a line of the body went past its limit; the
	// rest of the body was read and thrown away.
	ErrTextLineTooLong = errors.New("wire: message line too long")
)

// DotReader reads a DATA body (RFC 5321 4.1.1.4) up to the line holding a
// single dot, removing dot-stuffing (4.5.2). The end of data is exactly
// CRLF "." CRLF: every line must end in CRLF, and a lone CR or LF anywhere
// fails the read with ErrBareLineEnding.
//
// It implements io.WriterTo, which hands the destination whole runs of lines
// straight from the read buffer.
type DotReader struct {
	br      *Reader
	maxSize int64
	maxLine int
	size    int64
	pend    []byte
	done    bool
	err     error // sticky: reported at the end of the body
	fatal   error // reported at once
	lastCR  bool  // whether the last byte of a discarded long line was CR
}

// NewDotReader returns a reader for the body that follows a 354 reply.
// maxSize and maxLine bound the decoded body and each line (counting CRLF).
func NewDotReader(br *Reader, maxSize int64, maxLine int) *DotReader {
	br.Grow(maxLine + 1)
	return &DotReader{br: br, maxSize: maxSize, maxLine: maxLine}
}

// Size returns the number of body bytes read so far, after unstuffing.
func (d *DotReader) Size() int64 { return d.size }

func (d *DotReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(d.pend) == 0 {
			run, err := d.run()
			if err != nil {
				if n > 0 {
					return n, nil
				}
				return 0, err
			}
			d.pend = run
		}
		c := copy(p[n:], d.pend)
		d.pend = d.pend[c:]
		n += c
		if d.br.Buffered() == 0 && len(d.pend) == 0 {
			break // don't block for more while holding bytes for the caller
		}
	}
	return n, nil
}

// WriteTo writes the rest of the body to w.
func (d *DotReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	if len(d.pend) > 0 {
		n, err := w.Write(d.pend)
		total += int64(n)
		d.pend = nil
		if err != nil {
			return total, err
		}
	}
	for {
		run, err := d.run()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		n, err := w.Write(run)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
}

// Drain reads and discards the rest of the body and returns how it ended:
// nil for a clean end, or the error a reader would have seen.
func (d *DotReader) Drain() error {
	d.pend = nil
	for {
		_, err := d.run()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// run returns the next stretch of decoded body bytes: whole lines lying
// contiguous in the buffer, consumed from it. It returns io.EOF after the
// terminating dot line, or the sticky error found on the way.
func (d *DotReader) run() ([]byte, error) {
	if d.fatal != nil {
		return nil, d.fatal
	}
	b := d.br
	for {
		if d.done {
			if d.err != nil {
				return nil, d.err
			}
			return nil, io.EOF
		}
		start, pos := b.r, b.r
		for {
			i := bytes.IndexByte(b.buf[pos:b.w], '\n')
			if i < 0 {
				break
			}
			line := b.buf[pos : pos+i+1]
			if len(line) < 2 || line[len(line)-2] != '\r' || bytes.IndexByte(line[:len(line)-2], '\r') >= 0 {
				d.fatal = ErrBareLineEnding
				return nil, d.fatal
			}
			if line[0] == '.' {
				if pos > start {
					break // hand over what precedes; this line is next time's
				}
				if len(line) == 3 {
					pos += 3
					start = pos
					d.done = true
					break
				}
				// RFC 5321 4.5.2: drop the stuffed dot.
				pos++
				start++
				line = line[1:]
			}
			if len(line) > d.maxLine && d.err == nil {
				d.err = ErrTextLineTooLong
			}
			pos += len(line)
			if d.err == nil {
				d.size += int64(len(line))
				if d.size > d.maxSize {
					d.err = ErrTooBig
				}
			}
			if d.err != nil {
				start = pos // keep validating, stop delivering
			}
		}
		b.r = pos
		if pos > start && d.err == nil {
			return b.buf[start:pos], nil
		}
		if d.done {
			continue
		}
		// No complete line is buffered.
		if b.w-b.r >= d.maxLine+1 || b.w-b.r == len(b.buf) {
			if err := d.skipLongLine(); err != nil {
				return nil, err
			}
			continue
		}
		if err := b.fill(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			d.fatal = err
			return nil, err
		}
	}
}

// skipLongLine discards a line too long for the buffer, up to its LF.
func (d *DotReader) skipLongLine() error {
	b := d.br
	if d.err == nil {
		d.err = ErrTextLineTooLong
	}
	for {
		chunk := b.buf[b.r:b.w]
		if i := bytes.IndexByte(chunk, '\n'); i >= 0 {
			cr := d.lastCR
			if i > 0 {
				cr = chunk[i-1] == '\r'
			}
			if !cr || bytes.IndexByte(chunk[:max(i-1, 0)], '\r') >= 0 {
				d.fatal = ErrBareLineEnding
				return d.fatal
			}
			b.r += i + 1
			d.lastCR = false
			return nil
		}
		if n := len(chunk); n > 0 {
			if bytes.IndexByte(chunk[:n-1], '\r') >= 0 {
				d.fatal = ErrBareLineEnding
				return d.fatal
			}
			d.lastCR = chunk[n-1] == '\r'
		}
		b.r = b.w
		if err := b.fill(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			d.fatal = err
			return err
		}
	}
}

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
// Every body line before the first problem is delivered; after ErrTooBig
// or ErrTextLineTooLong nothing more is, but the body is still read (and
// checked for bare line endings) up to its end, so the next command is read
// in step. After ErrBareLineEnding or a read error the position in the
// stream is undefined and the connection must be closed.
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
}

// NewDotReader returns a reader for the body that follows a 354 reply.
// maxSize and maxLine bound the decoded body and each line (counting CRLF,
// not counting a stuffed dot: RFC 5321 4.5.3.1.6); a maxLine of zero or
// less means 1000. It grows br's buffer for the body; call br.Release when
// the body has been read.
func NewDotReader(br *Reader, maxSize int64, maxLine int) *DotReader {
	if maxLine <= 0 {
		maxLine = 1000
	}
	br.Grow(max(maxLine+1, BodyBufferSize))
	return &DotReader{br: br, maxSize: maxSize, maxLine: maxLine}
}

// Size returns the number of body bytes read so far, after unstuffing,
// including those read and discarded after ErrTooBig or
// ErrTextLineTooLong.
func (d *DotReader) Size() int64 { return d.size }

// Read reads decoded body bytes. It blocks only when it has nothing to
// return yet.
func (d *DotReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n := 0
	for {
		if len(d.pend) == 0 {
			// Don't block for more input while holding bytes for the caller.
			if n > 0 && (d.err != nil || !d.br.HasLine()) {
				return n, nil
			}
			run, err := d.run()
			if err != nil {
				if n > 0 {
					return n, nil // the error is sticky: the next Read gets it
				}
				return 0, err
			}
			d.pend = run
		}
		c := copy(p[n:], d.pend)
		d.pend = d.pend[c:]
		n += c
		if n == len(p) {
			return n, nil
		}
	}
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
//
// Each line costs two bytes.IndexByte calls (its LF, and any CR before its
// CRLF), so a body is checked and copied at memory speed, never a byte at a
// time. A run stops short of a line that needs handling (a stuffed dot, the
// end, an error) so that what it returns is always one slice of the buffer.
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
			n := len(line)
			if n < 2 || line[n-2] != '\r' || bytes.IndexByte(line[:n-2], '\r') >= 0 {
				if pos > start {
					break // deliver the good lines before it first
				}
				d.fatal = ErrBareLineEnding
				return nil, d.fatal
			}
			if line[0] == '.' {
				if pos > start {
					break // hand over what precedes; this line is next time's
				}
				if n == 3 { // RFC 5321 4.1.1.4: CRLF "." CRLF ends the data.
					pos += 3
					start = pos
					d.done = true
					break
				}
				// RFC 5321 4.5.2: drop the stuffed dot.
				pos++
				start++
				n--
			}
			if d.err == nil {
				var err error
				if n > d.maxLine {
					err = ErrTextLineTooLong
				} else if d.size+int64(n) > d.maxSize {
					err = ErrTooBig
				}
				if err != nil {
					if pos > start {
						break // deliver the good lines before it first
					}
					d.err = err
				}
			}
			d.size += int64(n)
			pos += n
			if d.err != nil {
				start = pos // keep validating, stop delivering
			}
		}
		b.r = pos
		if pos > start {
			return b.buf[start:pos], nil
		}
		if d.done {
			continue
		}
		// No complete line is buffered. A CR followed by anything but LF
		// is bare already: fail now rather than wait for an LF that a
		// client probing for SMTP smuggling may never send.
		tail := b.buf[b.r:b.w]
		if len(tail) > 1 && bytes.IndexByte(tail[:len(tail)-1], '\r') >= 0 {
			d.fatal = ErrBareLineEnding
			return nil, d.fatal
		}
		if len(tail) > d.maxLine || len(tail) == len(b.buf) {
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

// skipLongLine discards a line already known to be too long, up to its LF,
// however long it is, still checking that its only CR is the one before
// that LF.
func (d *DotReader) skipLongLine() error {
	b := d.br
	if d.err == nil {
		d.err = ErrTextLineTooLong
	}
	cr := false // the last byte of the previous chunk was a CR
	for {
		chunk := b.buf[b.r:b.w]
		i := bytes.IndexByte(chunk, '\n')
		seg := chunk
		if i >= 0 {
			seg = chunk[:i]
		}
		bare := cr && i != 0 // that CR was not followed by LF
		if j := bytes.IndexByte(seg, '\r'); j >= 0 && j < len(seg)-1 {
			bare = true
		}
		if i >= 0 && !bare && !(i > 0 && chunk[i-1] == '\r' || i == 0 && cr) {
			bare = true // LF without CR
		}
		if bare {
			d.fatal = ErrBareLineEnding
			return d.fatal
		}
		if i >= 0 {
			d.size += int64(i + 1)
			b.r += i + 1
			return nil
		}
		cr = len(chunk) > 0 && chunk[len(chunk)-1] == '\r'
		d.size += int64(len(chunk))
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

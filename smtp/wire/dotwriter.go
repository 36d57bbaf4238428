package wire

import (
	"bytes"
	"io"
)

// DotWriter writes a message body for DATA: it doubles a dot at the start
// of a line (RFC 5321 4.5.2), turns bare LF and bare CR into CRLF so that
// nothing it sends can be read as an end of data by a lenient receiver
// (the sending side of SMTP smuggling), and Close adds the final CRLF if
// the body lacked one and the terminating ".\r\n".
type DotWriter struct {
	w   io.Writer
	bol bool // at the beginning of a line
	cr  bool // the last byte written was a CR not yet followed by LF
}

// NewDotWriter returns a DotWriter over w.
func NewDotWriter(w io.Writer) *DotWriter { return &DotWriter{w: w, bol: true} }

func (d *DotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if d.cr {
			d.cr = false
			if p[0] != '\n' { // bare CR: complete it
				if _, err := d.w.Write([]byte("\n")); err != nil {
					return 0, err
				}
				d.bol = true
			} else {
				if _, err := d.w.Write([]byte("\n")); err != nil {
					return 0, err
				}
				d.bol = true
				p = p[1:]
				continue
			}
		}
		if d.bol && p[0] == '.' {
			if _, err := d.w.Write([]byte(".")); err != nil {
				return 0, err
			}
		}
		d.bol = false
		i := bytes.IndexAny(p, "\r\n")
		if i < 0 {
			if _, err := d.w.Write(p); err != nil {
				return 0, err
			}
			break
		}
		if _, err := d.w.Write(p[:i]); err != nil {
			return 0, err
		}
		if p[i] == '\r' {
			if _, err := d.w.Write([]byte("\r")); err != nil {
				return 0, err
			}
			d.cr = true
			p = p[i+1:]
			continue
		}
		// bare LF: send CRLF
		if _, err := d.w.Write([]byte("\r\n")); err != nil {
			return 0, err
		}
		d.bol = true
		p = p[i+1:]
	}
	return n, nil
}

// Close ends the body with the terminating dot line.
func (d *DotWriter) Close() error {
	var tail string
	switch {
	case d.cr:
		tail = "\n.\r\n"
	case d.bol:
		tail = ".\r\n"
	default:
		tail = "\r\n.\r\n"
	}
	d.cr, d.bol = false, true
	_, err := io.WriteString(d.w, tail)
	return err
}

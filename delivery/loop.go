package delivery

import (
	"bytes"
	"io"

	"github.com/smtpkit/smtpkit/smtp"
)

// DefaultMaxHops is the most Received: fields a message may carry before
// it is taken for a mail loop (Postfix's hopcount_limit).
const DefaultMaxHops = 50

// HopCounter passes a message through while counting the Received: fields
// of its header (RFC 5321 6.3: a loop shows as a growing trace). Once the
// count passes Max, Read fails with 554 5.4.6, so the message is refused
// before it is accepted, rather than bounced around forever.
type HopCounter struct {
	R    io.Reader
	Max  int // zero means DefaultMaxHops
	hops int
	mid  bool // inside a line (not at its beginning)
	done bool // past the header
	prev byte
	line []byte // the start of the current line, up to 9 bytes
}

// Hops returns the Received: fields seen so far.
func (h *HopCounter) Hops() int { return h.hops }

var receivedPrefix = []byte("received:")

func (h *HopCounter) Read(p []byte) (int, error) {
	n, err := h.R.Read(p)
	if h.done {
		return n, err
	}
	for _, c := range p[:n] {
		if !h.mid {
			if c == '\r' || c == '\n' {
				// An empty line: the header is over.
				if c == '\n' || h.prev == '\n' {
					h.done = true
					break
				}
			}
			h.line = append(h.line[:0], c|0x20)
			h.mid = true
		} else if len(h.line) > 0 && len(h.line) < len(receivedPrefix) {
			h.line = append(h.line, c|0x20)
			if len(h.line) == len(receivedPrefix) && bytes.Equal(h.line, receivedPrefix) {
				h.hops++
				max := h.Max
				if max <= 0 {
					max = DefaultMaxHops
				}
				if h.hops > max {
					return 0, smtp.NewError(554, smtp.EnhancedCode{5, 4, 6}, "Too many hops: mail loop detected")
				}
			}
		}
		if c == '\n' {
			h.mid = false
			h.line = h.line[:0]
		}
		h.prev = c
	}
	return n, err
}

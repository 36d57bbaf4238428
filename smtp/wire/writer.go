package wire

import (
	"bufio"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/smtpkit/smtpkit/smtp"
)

// Writer writes replies into a buffer; nothing reaches the connection until
// Flush. The server flushes before it blocks for input, so a pipelined
// batch of commands gets its replies in one write (RFC 2920 3.2).
type Writer struct {
	bw *bufio.Writer
	// Enhanced puts the enhanced status code on every line of 2xx, 4xx and
	// 5xx replies (RFC 2034 3). Set once the client has said EHLO.
	Enhanced bool
}

// NewWriter returns a Writer over w.
func NewWriter(w io.Writer) *Writer {
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return &Writer{bw: bw}
}

var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}

// Free returns the writer's buffer to its pool, dropping anything
// unflushed. The writer must not be used afterwards.
func (w *Writer) Free() {
	if w.bw != nil {
		w.bw.Reset(nil)
		writerPool.Put(w.bw)
		w.bw = nil
	}
}

// Reset makes the writer write to w, dropping anything unflushed.
func (w *Writer) Reset(wr io.Writer) { w.bw.Reset(wr) }

// Flush sends the buffered replies.
func (w *Writer) Flush() error {
	if w.bw.Buffered() == 0 {
		return nil
	}
	return w.bw.Flush()
}

// Buffered returns the number of bytes waiting for Flush.
func (w *Writer) Buffered() int { return w.bw.Buffered() }

// Reply writes one reply. Text may hold several lines separated by "\n";
// each becomes a continuation line. CR and other control characters in the
// text are replaced, so no reply can be split by what a hook put in it.
func (w *Writer) Reply(code int, enh smtp.EnhancedCode, text string) {
	// RFC 2034 3 and RFC 3463 2: enhanced codes go with 2xx, 4xx and 5xx
	// only; 354 and AUTH's 334 (RFC 4954 4) carry none.
	class := code / 100
	withEnh := w.Enhanced && enh != (smtp.EnhancedCode{}) && (class == 2 || class == 4 || class == 5)
	for {
		line, rest, more := strings.Cut(text, "\n")
		line = strings.TrimSuffix(line, "\r") // text written with CRLFs
		w.bw.WriteString(strconv.Itoa(code))
		if more {
			w.bw.WriteByte('-')
		} else {
			w.bw.WriteByte(' ')
		}
		if withEnh {
			w.bw.WriteString(enh.String())
			if line != "" {
				w.bw.WriteByte(' ')
			}
		}
		writeClean(w.bw, line)
		w.bw.WriteString("\r\n")
		if !more {
			return
		}
		text = rest
	}
}

// ReplyLines writes a multi-line reply from separate lines, as EHLO's,
// without enhanced codes (RFC 2034 3 exempts the EHLO reply). A line
// holding a line break has it replaced like any control character.
func (w *Writer) ReplyLines(code int, lines []string) {
	if len(lines) == 0 {
		lines = []string{""}
	}
	for i, l := range lines {
		w.bw.WriteString(strconv.Itoa(code))
		if i == len(lines)-1 {
			w.bw.WriteByte(' ')
		} else {
			w.bw.WriteByte('-')
		}
		writeClean(w.bw, l)
		w.bw.WriteString("\r\n")
	}
}

// ReplyError writes the reply an error carries.
func (w *Writer) ReplyError(e *smtp.Error) { w.Reply(e.Code, e.EnhancedCode, e.Message) }

// Raw writes bytes as they are: for the client's commands.
func (w *Writer) Raw(p []byte) (int, error) { return w.bw.Write(p) }

func writeClean(bw *bufio.Writer, s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			// Slow path: copy byte by byte.
			for j := 0; j < len(s); j++ {
				if c := s[j]; c < 0x20 || c == 0x7f {
					bw.WriteByte(' ')
				} else {
					bw.WriteByte(c)
				}
			}
			return
		}
	}
	bw.WriteString(s)
}

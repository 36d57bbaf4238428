package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// readers returns the ways the same bytes can arrive.
func readers(s string) map[string]func() io.Reader {
	return map[string]func() io.Reader{
		"whole":    func() io.Reader { return strings.NewReader(s) },
		"1-byte":   func() io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"half":     func() io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
		"7-byte":   func() io.Reader { return &chunkReader{data: []byte(s), n: 7} },
		"data+eof": func() io.Reader { return iotest.DataErrReader(strings.NewReader(s)) },
	}
}

type lineResult struct {
	line string
	err  error
}

func readLines(br *Reader, max int) []lineResult {
	var out []lineResult
	for {
		l, err := br.ReadLine(max)
		out = append(out, lineResult{string(l), err})
		if err != nil && err != ErrLineTooLong {
			return out
		}
	}
}

func TestReadLine(t *testing.T) {
	long := strings.Repeat("x", 5000)
	tests := []struct {
		name string
		in   string
		max  int
		want []lineResult
	}{
		{"CRLF", "HELO a\r\nQUIT\r\n", 512, []lineResult{{"HELO a", nil}, {"QUIT", nil}, {"", io.EOF}}},
		{"bare LF tolerated", "HELO a\nQUIT\n", 512, []lineResult{{"HELO a", nil}, {"QUIT", nil}, {"", io.EOF}}},
		{"only the CR of CRLF goes", "a\r\r\nb \r\n", 512, []lineResult{{"a\r", nil}, {"b ", nil}, {"", io.EOF}}},
		{"empty lines", "\r\n\n", 512, []lineResult{{"", nil}, {"", nil}, {"", io.EOF}}},
		{"exactly max with CRLF", "12345678\r\nok\r\n", 10, []lineResult{{"12345678", nil}, {"ok", nil}, {"", io.EOF}}},
		{"exactly max with LF", "123456789\nok\r\n", 10, []lineResult{{"123456789", nil}, {"ok", nil}, {"", io.EOF}}},
		{"max+1", "123456789\r\nok\r\n", 10, []lineResult{{"", ErrLineTooLong}, {"ok", nil}, {"", io.EOF}}},
		{"max+1 LF", "1234567890\nok\r\n", 10, []lineResult{{"", ErrLineTooLong}, {"ok", nil}, {"", io.EOF}}},
		{"far over max", long + "\r\nok\r\n", 512, []lineResult{{"", ErrLineTooLong}, {"ok", nil}, {"", io.EOF}}},
		{"two long in a row", long + "\r\n" + long + "\nok\r\n", 512, []lineResult{{"", ErrLineTooLong}, {"", ErrLineTooLong}, {"ok", nil}, {"", io.EOF}}},
		{"EOF mid-line", "HELO a\r\nQUI", 512, []lineResult{{"HELO a", nil}, {"", io.ErrUnexpectedEOF}}},
		{"EOF after CR", "QUIT\r", 512, []lineResult{{"", io.ErrUnexpectedEOF}}},
		{"EOF in a long line", long, 512, []lineResult{{"", io.ErrUnexpectedEOF}}},
		{"empty input", "", 512, []lineResult{{"", io.EOF}}},
	}
	for _, tt := range tests {
		for rname, mk := range readers(tt.in) {
			br := NewReader(mk(), CommandBufferSize)
			got := readLines(br, tt.max)
			if len(got) != len(tt.want) {
				t.Errorf("%s/%s: got %v, want %v", tt.name, rname, got, tt.want)
				continue
			}
			for i := range got {
				if got[i].line != tt.want[i].line || !errors.Is(got[i].err, tt.want[i].err) {
					t.Errorf("%s/%s: line %d = %q, %v; want %q, %v", tt.name, rname, i, got[i].line, got[i].err, tt.want[i].line, tt.want[i].err)
				}
			}
		}
	}
}

func TestReadLineDiscardLimit(t *testing.T) {
	// 2 MiB without an LF: no point reading on for a line end.
	in := io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("A"), 2<<20)), strings.NewReader("\r\nQUIT\r\n"))
	br := NewReader(in, CommandBufferSize)
	if _, err := br.ReadLine(512); err != ErrDiscardLimit {
		t.Fatalf("ReadLine = %v, want ErrDiscardLimit", err)
	}
	// Just under the limit the line is discarded and the next one read.
	in = io.MultiReader(bytes.NewReader(bytes.Repeat([]byte("A"), 1<<20-100)), strings.NewReader("\r\nQUIT\r\n"))
	br = NewReader(in, CommandBufferSize)
	if _, err := br.ReadLine(512); err != ErrLineTooLong {
		t.Fatalf("ReadLine = %v, want ErrLineTooLong", err)
	}
	if l, err := br.ReadLine(512); string(l) != "QUIT" || err != nil {
		t.Fatalf("ReadLine = %q, %v", l, err)
	}
}

// scripted delivers one piece per Read and records, for each Read, whether
// the reader's buffer held a whole line when it was called.
type scripted struct {
	pieces []string
	reads  int
}

func (s *scripted) Read(p []byte) (int, error) {
	if len(s.pieces) == 0 {
		return 0, io.EOF
	}
	s.reads++
	n := copy(p, s.pieces[0])
	s.pieces[0] = s.pieces[0][n:]
	if s.pieces[0] == "" {
		s.pieces = s.pieces[1:]
	}
	return n, nil
}

// RFC 2920 3.2: replies are flushed when the input buffer is empty. The
// server flushes in BeforeFill, so BeforeFill must run before every read
// from the connection, and never while a whole command is still buffered.
func TestBeforeFillPipelining(t *testing.T) {
	src := &scripted{pieces: []string{
		"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nRCPT TO:<e@f>\r\nDATA\r\n", // a pipelined batch
		"NOOP\r", "\n", // one command cut in two
		"QUIT\r\n",
	}}
	br := NewReader(src, CommandBufferSize)
	var flushes []int // how many lines had been read at each flush
	lines := 0
	br.BeforeFill = func() error {
		if br.HasLine() {
			t.Errorf("BeforeFill with a whole line buffered (%d bytes)", br.Buffered())
		}
		flushes = append(flushes, lines)
		return nil
	}
	for {
		_, err := br.ReadLine(512)
		if err != nil {
			if err != io.EOF {
				t.Fatal(err)
			}
			break
		}
		lines++
	}
	// One flush before the batch, none inside it, one after DATA, one
	// inside the split NOOP, one after NOOP, and one after QUIT.
	want := []int{0, 4, 4, 5, 6}
	if len(flushes) != len(want) {
		t.Fatalf("flushes at %v, want %v", flushes, want)
	}
	for i := range want {
		if flushes[i] != want[i] {
			t.Fatalf("flushes at %v, want %v", flushes, want)
		}
	}
	if src.reads != 4 {
		t.Errorf("%d reads, want 4", src.reads)
	}
}

func TestBeforeFillError(t *testing.T) {
	boom := errors.New("write: broken pipe")
	br := NewReader(strings.NewReader("HELO a\r\n"), CommandBufferSize)
	br.BeforeFill = func() error { return boom }
	if _, err := br.ReadLine(512); err != boom {
		t.Fatalf("ReadLine = %v, want the flush error", err)
	}
	if _, err := br.ReadLine(512); err != boom {
		t.Fatalf("second ReadLine = %v, want the flush error again", err)
	}
}

// CVE-2011-0411: plaintext pipelined behind STARTTLS must not survive into
// the TLS session.
func TestResetDiscardsBuffered(t *testing.T) {
	br := NewReader(strings.NewReader("STARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\n"), CommandBufferSize)
	l, err := br.ReadLine(512)
	if string(l) != "STARTTLS" || err != nil {
		t.Fatalf("ReadLine = %q, %v", l, err)
	}
	if br.Buffered() == 0 || !br.HasLine() {
		t.Fatal("the injected commands should be buffered for this test")
	}
	br.Reset(strings.NewReader("EHLO client\r\n"))
	if br.Buffered() != 0 || br.HasLine() {
		t.Fatalf("Buffered = %d after Reset", br.Buffered())
	}
	if l, err := br.ReadLine(512); string(l) != "EHLO client" || err != nil {
		t.Fatalf("ReadLine after Reset = %q, %v", l, err)
	}
	// Reset also clears a sticky error from the old connection.
	br = NewReader(strings.NewReader(""), CommandBufferSize)
	if _, err := br.ReadLine(512); err != io.EOF {
		t.Fatal(err)
	}
	br.Reset(strings.NewReader("NOOP\r\n"))
	if l, err := br.ReadLine(512); string(l) != "NOOP" || err != nil {
		t.Fatalf("ReadLine after Reset = %q, %v", l, err)
	}
}

func TestGrowReleaseKeepBuffered(t *testing.T) {
	in := "DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
	br := NewReader(strings.NewReader(in), CommandBufferSize)
	if l, err := br.ReadLine(512); string(l) != "DATA" || err != nil {
		t.Fatal(l, err)
	}
	before := br.Buffered()
	br.Grow(BodyBufferSize)
	if len(br.buf) < BodyBufferSize || br.Buffered() != before {
		t.Fatalf("after Grow: buffer %d, buffered %d (was %d)", len(br.buf), br.Buffered(), before)
	}
	// One buffer while the body streams: the command buffer went back.
	if br.cmdBuf != nil || br.small != nil {
		t.Fatalf("after Grow the reader still holds its command buffer")
	}
	br.Grow(100) // smaller: nothing to do
	if l, err := br.ReadLine(512); string(l) != "Subject: x" || err != nil {
		t.Fatal(l, err)
	}
	before = br.Buffered()
	br.Release()
	if len(br.buf) != CommandBufferSize || br.Buffered() != before || br.pooled != nil || br.cmdBuf == nil {
		t.Fatalf("after Release: buffer %d, buffered %d (was %d), pooled command buffer %v",
			len(br.buf), br.Buffered(), before, br.cmdBuf != nil)
	}
	br.Release() // twice is harmless
	if got := rest(br); got != "\r\nbody\r\n.\r\nQUIT\r\n" {
		t.Fatalf("rest = %q", got)
	}

	// Release keeps the big buffer while what is buffered would not fit.
	big := strings.Repeat("y", 10000) + "\r\n"
	br = NewReader(strings.NewReader(big), 64)
	br.Grow(BodyBufferSize)
	if _, err := br.Next(1); err != nil {
		t.Fatal(err)
	}
	br.Release()
	if len(br.buf) != BodyBufferSize {
		t.Fatalf("released to %d bytes with %d buffered", len(br.buf), br.Buffered())
	}
	if got := rest(br); got != big[1:] {
		t.Fatalf("lost bytes: %d left, want %d", len(got), len(big)-1)
	}
	br.Release()
	if len(br.buf) != 64 {
		t.Fatalf("buffer %d after final Release", len(br.buf))
	}

	// Growing past the pooled size allocates, and Release still works.
	br = NewReader(strings.NewReader("abc\r\n"), 64)
	br.Grow(BodyBufferSize * 2)
	if len(br.buf) != BodyBufferSize*2 {
		t.Fatal(len(br.buf))
	}
	br.Release()
	if l, err := br.ReadLine(512); string(l) != "abc" || err != nil {
		t.Fatal(l, err)
	}
}

func TestNext(t *testing.T) {
	br := NewReader(&chunkReader{data: []byte("0123456789"), n: 4}, 64)
	var got []string
	for {
		p, err := br.Next(3)
		if err != nil {
			if err != io.EOF {
				t.Fatal(err)
			}
			break
		}
		got = append(got, string(p))
	}
	want := []string{"012", "3", "456", "7", "89"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("Next pieces %q, want %q", got, want)
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestNoProgress(t *testing.T) {
	br := NewReader(zeroReader{}, 64)
	if _, err := br.ReadLine(512); err != io.ErrNoProgress {
		t.Fatalf("ReadLine = %v, want io.ErrNoProgress", err)
	}
}

func TestReadErrorAfterData(t *testing.T) {
	boom := errors.New("connection reset")
	br := NewReader(io.MultiReader(strings.NewReader("NOOP\r\nQU"), iotest.ErrReader(boom)), 64)
	if l, err := br.ReadLine(512); string(l) != "NOOP" || err != nil {
		t.Fatal(l, err)
	}
	if _, err := br.ReadLine(512); err != boom {
		t.Fatalf("ReadLine = %v, want %v", err, boom)
	}
}

package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// refDecode is the DATA decoder spelled out the slow, obvious way, to check
// DotReader against: split on LF, require CRLF, unstuff, stop at ".". It
// returns the body lines delivered before the first problem, the error,
// and what follows the terminating line.
func refDecode(in []byte, maxSize int64, maxLine int) (body []byte, err error, rest []byte) {
	var sticky error
	var size int64
	for {
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			// No more lines: a CR followed by anything is bare.
			if len(in) > 1 && bytes.IndexByte(in[:len(in)-1], '\r') >= 0 {
				return body, ErrBareLineEnding, nil
			}
			return body, io.ErrUnexpectedEOF, nil
		}
		line := in[:i+1]
		in = in[i+1:]
		if !bytes.HasSuffix(line, []byte("\r\n")) || bytes.Count(line, []byte("\r")) != 1 {
			return body, ErrBareLineEnding, nil
		}
		if string(line) == ".\r\n" {
			return body, sticky, in
		}
		if line[0] == '.' {
			line = line[1:]
		}
		if sticky == nil {
			if len(line) > maxLine {
				sticky = ErrTextLineTooLong
			} else if size+int64(len(line)) > maxSize {
				sticky = ErrTooBig
			}
		}
		size += int64(len(line))
		if sticky == nil {
			body = append(body, line...)
		}
	}
}

// How a body can be taken out of a DotReader.
var readModes = []struct {
	name string
	read func(d *DotReader) (string, error)
}{
	{"WriteTo", func(d *DotReader) (string, error) {
		var sb strings.Builder
		_, err := d.WriteTo(&sb)
		return sb.String(), err
	}},
	{"io.Copy", func(d *DotReader) (string, error) {
		var sb bytes.Buffer // has ReadFrom; io.Copy must still prefer WriteTo
		_, err := io.Copy(&sb, d)
		return sb.String(), err
	}},
	{"io.Copy/Read", func(d *DotReader) (string, error) {
		var sb strings.Builder
		_, err := io.Copy(&sb, onlyReader{d})
		return sb.String(), err
	}},
	{"Read1", func(d *DotReader) (string, error) { return readBy(d, 1) }},
	{"Read7", func(d *DotReader) (string, error) { return readBy(d, 7) }},
	{"ReadAll", func(d *DotReader) (string, error) {
		b, err := io.ReadAll(d)
		return string(b), err
	}},
	{"Read7+WriteTo", func(d *DotReader) (string, error) {
		p := make([]byte, 7)
		n, err := d.Read(p)
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return string(p[:n]), err
		}
		var sb strings.Builder
		_, err = d.WriteTo(&sb)
		return string(p[:n]) + sb.String(), err
	}},
}

func readBy(d *DotReader, n int) (string, error) {
	var out []byte
	p := make([]byte, n)
	for {
		k, err := d.Read(p)
		if k < 0 || k > n || k > 0 && err != nil {
			panic("Read broke the io.Reader contract")
		}
		out = append(out, p[:k]...)
		if err == io.EOF {
			return string(out), nil
		}
		if err != nil {
			return string(out), err
		}
	}
}

// sources returns the ways the same bytes can arrive.
func sources(s string) []struct {
	name string
	r    func() io.Reader
} {
	return []struct {
		name string
		r    func() io.Reader
	}{
		{"whole", func() io.Reader { return strings.NewReader(s) }},
		{"1-byte", func() io.Reader { return iotest.OneByteReader(strings.NewReader(s)) }},
		{"half", func() io.Reader { return iotest.HalfReader(strings.NewReader(s)) }},
		{"3-byte", func() io.Reader { return &chunkReader{data: []byte(s), n: 3} }},
		{"data+eof", func() io.Reader { return iotest.DataErrReader(strings.NewReader(s)) }},
	}
}

type decoded struct {
	body string
	err  error
	rest string // only when the stream is still in step
	size int64
}

func decodeWith(src io.Reader, maxSize int64, maxLine int, read func(*DotReader) (string, error)) decoded {
	br := NewReader(src, CommandBufferSize)
	d := NewDotReader(br, maxSize, maxLine)
	var r decoded
	r.body, r.err = read(d)
	r.size = d.Size()
	// Released before the rest is read, as the server does after a body:
	// what was read ahead must survive the move back to a command buffer.
	br.Release()
	if r.err == nil || r.err == ErrTooBig || r.err == ErrTextLineTooLong {
		r.rest = rest(br)
	}
	return r
}

func TestDotReader(t *testing.T) {
	long := strings.Repeat("L", 40000) // longer than the body buffer
	tests := []struct {
		name    string
		in      string
		maxSize int64
		maxLine int
		body    string
		err     error
		rest    string
	}{
		{name: "simple", in: "Subject: hi\r\n\r\nHello\r\n.\r\n", body: "Subject: hi\r\n\r\nHello\r\n"},
		{name: "empty body", in: ".\r\n", body: ""},
		{name: "blank lines", in: "\r\n\r\n.\r\n", body: "\r\n\r\n"},
		{name: "stuffed dot", in: "..x\r\n.\r\n", body: ".x\r\n"},
		{name: "stuffed lone dot", in: "..\r\n.\r\n", body: ".\r\n"},
		{name: "stuffed two dots", in: "...\r\n.\r\n", body: "..\r\n"},
		{name: "dot space", in: ". \r\n.\r\n", body: " \r\n"},
		{name: "unstuffed leading dot dropped", in: "a\r\n.b\r\n.\r\n", body: "a\r\nb\r\n"}, // RFC 5321 4.5.2
		{name: "dot inside lines", in: "a.\r\n .\r\na.b\r\n.\r\n", body: "a.\r\n .\r\na.b\r\n"},
		{name: "dot lines in a row", in: "..a\r\n..b\r\n..\r\n.\r\n", body: ".a\r\n.b\r\n.\r\n"},
		{name: "next command stays", in: "x\r\n.\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", body: "x\r\n", rest: "MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"},
		{name: "binary octets", in: "\x00\x01\xff\xfe\t\x7f\r\n.\r\n", body: "\x00\x01\xff\xfe\t\x7f\r\n"},

		// Bare line endings: never a clean end (SMTP smuggling).
		{name: "LF.LF", in: "a\r\n\n.\nMAIL FROM:<x>\r\n.\r\n", body: "a\r\n", err: ErrBareLineEnding},
		{name: "LF.LF alone", in: "\n.\n", err: ErrBareLineEnding},
		{name: "CR.CR alone", in: "\r.\r", err: ErrBareLineEnding},
		{name: "CR.CR then more", in: "a\r\nb\r.\rMAIL FROM:<x>\r\n.\r\n", body: "a\r\n", err: ErrBareLineEnding},
		{name: "LF.CRLF", in: "\n.\r\n", err: ErrBareLineEnding},
		{name: "text LF.CRLF", in: "a\r\nb\n.\r\nc\r\n.\r\n", body: "a\r\n", err: ErrBareLineEnding},
		{name: "dot LF", in: ".\n", err: ErrBareLineEnding},
		{name: "CRLF.LF", in: "\r\n.\n", body: "\r\n", err: ErrBareLineEnding},
		{name: "CRLF.CR", in: "\r\n.\rx", body: "\r\n", err: ErrBareLineEnding},
		{name: "CRLF.LF then real end", in: "a\r\n.\nb\r\n.\r\n", body: "a\r\n", err: ErrBareLineEnding},
		{name: "bare LF at start", in: "\nabc\r\n.\r\n", err: ErrBareLineEnding},
		{name: "bare CR at start", in: "\rabc\r\n.\r\n", err: ErrBareLineEnding},
		{name: "bare LF middle", in: "ab\ncd\r\n.\r\n", err: ErrBareLineEnding},
		{name: "bare CR middle", in: "ab\rcd\r\n.\r\n", err: ErrBareLineEnding},
		{name: "CR before CRLF", in: "ab\r\r\n.\r\n", err: ErrBareLineEnding},
		{name: "LF before CRLF", in: "ab\n\r\n.\r\n", err: ErrBareLineEnding},
		{name: "CRCRLF", in: "ok\r\n\r\r\n.\r\n", body: "ok\r\n", err: ErrBareLineEnding},
		{name: "bare CR after good lines", in: "1\r\n2\r\n3\r4\r\n.\r\n", body: "1\r\n2\r\n", err: ErrBareLineEnding},
		{name: "bare LF in stuffed line", in: "..\n.\r\n", err: ErrBareLineEnding},
		{name: "bare LF after too big", in: "aaaa\r\nb\n.\r\n", maxSize: 3, err: ErrBareLineEnding},

		// Unfinished input.
		{name: "EOF", in: "abc\r\n", body: "abc\r\n", err: io.ErrUnexpectedEOF},
		{name: "EOF mid-line", in: "abc\r\nde", body: "abc\r\n", err: io.ErrUnexpectedEOF},
		{name: "EOF after dot", in: "abc\r\n.", body: "abc\r\n", err: io.ErrUnexpectedEOF},
		{name: "EOF after dot CR", in: "abc\r\n.\r", body: "abc\r\n", err: io.ErrUnexpectedEOF},
		{name: "EOF at once", in: "", err: io.ErrUnexpectedEOF},
		{name: "EOF in long line", in: long, maxLine: 1000, err: io.ErrUnexpectedEOF},

		// maxSize counts the decoded body, CRLFs included.
		{name: "size exactly max", in: "12345678\r\n.\r\nNOOP\r\n", maxSize: 10, body: "12345678\r\n", rest: "NOOP\r\n"},
		{name: "size max+1", in: "123456789\r\n.\r\nNOOP\r\n", maxSize: 10, err: ErrTooBig, rest: "NOOP\r\n"},
		{name: "size max+1 later", in: "1234\r\n5678\r\n9\r\n.\r\nNOOP\r\n", maxSize: 10, body: "1234\r\n", err: ErrTooBig, rest: "NOOP\r\n"},
		{name: "size: stuffing dots don't count", in: "..345678\r\n.\r\nNOOP\r\n", maxSize: 10, body: ".345678\r\n", rest: "NOOP\r\n"},
		{name: "size 0, empty body", in: ".\r\nNOOP\r\n", maxSize: 0, body: "", rest: "NOOP\r\n"},
		{name: "size 0, too big", in: "\r\n.\r\nNOOP\r\n", maxSize: 0, err: ErrTooBig, rest: "NOOP\r\n"},
		{name: "too big, then long body", in: "12345678901\r\n" + strings.Repeat("more\r\n", 10000) + ".\r\nQUIT\r\n", maxSize: 10, err: ErrTooBig, rest: "QUIT\r\n"},

		// maxLine counts CRLF, not a stuffed dot (RFC 5321 4.5.3.1.6).
		{name: "line exactly max", in: "12345678\r\n.\r\nNOOP\r\n", maxLine: 10, body: "12345678\r\n", rest: "NOOP\r\n"},
		{name: "line max+1", in: "ok\r\n123456789\r\nok\r\n.\r\nNOOP\r\n", maxLine: 10, body: "ok\r\n", err: ErrTextLineTooLong, rest: "NOOP\r\n"},
		{name: "stuffed line exactly max", in: "..2345678\r\n.\r\nNOOP\r\n", maxLine: 10, body: ".2345678\r\n", rest: "NOOP\r\n"},
		{name: "stuffed line max+1", in: "..23456789\r\n.\r\nNOOP\r\n", maxLine: 10, err: ErrTextLineTooLong, rest: "NOOP\r\n"},
		{name: "first error wins", in: "12345678901234\r\n.\r\n", maxLine: 10, maxSize: 5, err: ErrTextLineTooLong},
		{name: "first error wins 2", in: "1234\r\n12345678901234\r\n.\r\n", maxLine: 10, maxSize: 5, err: ErrTooBig},
		{name: "line longer than buffer", in: "a\r\n" + long + "\r\nb\r\n.\r\nQUIT\r\n", maxLine: 1000, body: "a\r\n", err: ErrTextLineTooLong, rest: "QUIT\r\n"},
		{name: "stuffed line longer than buffer", in: "." + long + "\r\n.\r\nQUIT\r\n", maxLine: 1000, err: ErrTextLineTooLong, rest: "QUIT\r\n"},
		{name: "two long lines", in: long + "\r\n" + long + "\r\n.\r\nQUIT\r\n", maxLine: 1000, err: ErrTextLineTooLong, rest: "QUIT\r\n"},
		{name: "long line, bare LF at its end", in: long + "\n.\r\n", maxLine: 1000, err: ErrBareLineEnding},
		{name: "long line, bare CR inside", in: long + "\r" + long + "\r\n.\r\n", maxLine: 1000, err: ErrBareLineEnding},
		{name: "long line, bare CR near its end", in: long + "\rx\r\n.\r\n", maxLine: 1000, err: ErrBareLineEnding},
		{name: "long line, CR CR LF", in: long + "\r\r\n.\r\n", maxLine: 1000, err: ErrBareLineEnding},
		{name: "long line fits a big limit", in: long + "\r\n.\r\nQUIT\r\n", maxLine: 50000, body: long + "\r\n", rest: "QUIT\r\n"},
		{name: "default line limit", in: strings.Repeat("x", 998) + "\r\n" + strings.Repeat("y", 999) + "\r\n.\r\n", maxLine: -1, body: strings.Repeat("x", 998) + "\r\n", err: ErrTextLineTooLong},
	}
	for _, tt := range tests {
		if tt.maxSize == 0 && !strings.HasPrefix(tt.name, "size 0") {
			tt.maxSize = 1 << 30
		}
		if tt.maxLine == 0 {
			tt.maxLine = 1000
		}
		// The table and the reference decoder agree.
		rb, rerr, rrest := refDecode([]byte(tt.in), tt.maxSize, max(tt.maxLine, 0)+1000*boolInt(tt.maxLine < 0))
		if string(rb) != tt.body || rerr != tt.err || (rerr == nil || rerr == ErrTooBig || rerr == ErrTextLineTooLong) && string(rrest) != tt.rest {
			t.Errorf("%s: reference decoder gives %q, %v, rest %q", tt.name, rb, rerr, rrest)
		}
		for _, src := range sources(tt.in) {
			for _, m := range readModes {
				got := decodeWith(src.r(), tt.maxSize, tt.maxLine, m.read)
				if got.body != tt.body || got.err != tt.err || got.rest != tt.rest {
					t.Errorf("%s [%s, %s]:\n got %.80q, %v, rest %q\nwant %.80q, %v, rest %q",
						tt.name, src.name, m.name, got.body, got.err, got.rest, tt.body, tt.err, tt.rest)
				}
				if tt.err == nil && got.size != int64(len(tt.body)) {
					t.Errorf("%s [%s, %s]: Size = %d, want %d", tt.name, src.name, m.name, got.size, len(tt.body))
				}
			}
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// The end of data, and everything else, split across reads at every pair
// of positions.
func TestDotReaderSplitEverywhere(t *testing.T) {
	const in = "Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n"
	const body = "Subject: x\r\n\r\n.dot\r\nbody\r\n"
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j++ {
			for _, m := range readModes {
				got := decodeWith(splitAt(in, i, j), 1<<20, 1000, m.read)
				if got.body != body || got.err != nil || got.rest != "QUIT\r\n" {
					t.Fatalf("split at %d,%d [%s]: %q, %v, rest %q", i, j, m.name, got.body, got.err, got.rest)
				}
			}
		}
	}
	// And a smuggling attempt, cut everywhere, is never a clean end.
	const evil = "a\r\n\n.\nMAIL FROM:<x@y>\r\n.\r\n"
	for i := 0; i <= len(evil); i++ {
		for _, m := range readModes {
			if got := decodeWith(splitAt(evil, i), 1<<20, 1000, m.read); got.err != ErrBareLineEnding {
				t.Fatalf("split at %d [%s]: %v", i, m.name, got.err)
			}
		}
	}
}

// A long line split so that its only CR ends one read and the next read
// does not start with LF: a bare CR at a chunk boundary.
func TestDotReaderBareCRAtChunkBoundary(t *testing.T) {
	line := strings.Repeat("x", 5000)
	for _, in := range []string{line + "\ry\r\n.\r\n", line + "\r\r\n.\r\n", line + "\r.\r\n"} {
		for _, at := range []int{len(line) + 1, 1000, 2000} {
			got := decodeWith(splitAt(in, at, len(line)+1), 1<<20, 1000, readModes[0].read)
			if got.err != ErrBareLineEnding {
				t.Errorf("%q cut at %d: %v", in[len(line):], at, got.err)
			}
		}
	}
	// The same line with CRLF cut between CR and LF is fine.
	in := line + "\r\n.\r\nQUIT\r\n"
	got := decodeWith(splitAt(in, len(line)+1), 1<<20, 1000, readModes[0].read)
	if got.err != ErrTextLineTooLong || got.rest != "QUIT\r\n" {
		t.Errorf("CRLF cut in two: %v, rest %q", got.err, got.rest)
	}
}

// A client probing for SMTP smuggling sends "\r.\r" and waits: the reader
// must fail at once, not wait for an LF that never comes.
func TestDotReaderBareCRWithoutWaiting(t *testing.T) {
	for _, probe := range []string{"data\r.\r", "\r.\r", "data\r\n.\rX"} {
		pr, pw := io.Pipe()
		go pw.Write([]byte(probe)) // and never close
		done := make(chan error, 1)
		go func() {
			br := NewReader(pr, CommandBufferSize)
			done <- NewDotReader(br, 1<<20, 1000).Drain()
		}()
		select {
		case err := <-done:
			if err != ErrBareLineEnding {
				t.Errorf("%q: %v", probe, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("%q: reader waits for more input", probe)
		}
		pw.Close()
	}
}

// Read hands over what it has rather than block for more.
func TestDotReaderReadDoesNotHoldData(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("line 1\r\nline 2\r\nline"))
	br := NewReader(pr, CommandBufferSize)
	d := NewDotReader(br, 1<<20, 1000)
	done := make(chan string, 1)
	go func() {
		p := make([]byte, 4096)
		n, _ := d.Read(p)
		done <- string(p[:n])
	}()
	select {
	case got := <-done:
		if got != "line 1\r\nline 2\r\n" {
			t.Errorf("Read = %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read blocked while holding data")
	}
}

func TestDotReaderPipelinedData(t *testing.T) {
	// RFC 2920: a client may send DATA and, after the 354, the body and
	// QUIT in one segment; all of it can be buffered before the body is.
	in := "DATA\r\nSubject: x\r\n\r\n..hi\r\n.\r\nQUIT\r\n"
	br := NewReader(strings.NewReader(in), CommandBufferSize)
	fills := 0
	br.BeforeFill = func() error { fills++; return nil }
	if l, err := br.ReadLine(512); string(l) != "DATA" || err != nil {
		t.Fatal(l, err)
	}
	d := NewDotReader(br, 1<<20, 1000)
	var sb strings.Builder
	if _, err := d.WriteTo(&sb); err != nil || sb.String() != "Subject: x\r\n\r\n.hi\r\n" {
		t.Fatalf("WriteTo: %q, %v", sb.String(), err)
	}
	br.Release()
	if l, err := br.ReadLine(512); string(l) != "QUIT" || err != nil {
		t.Fatal(l, err)
	}
	if fills != 1 {
		t.Errorf("BeforeFill ran %d times; the body was buffered already", fills)
	}
	if _, err := d.WriteTo(&sb); err != nil {
		t.Errorf("WriteTo after the end = %v", err)
	}
	if n, err := d.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Errorf("Read after the end = %d, %v", n, err)
	}
}

// The server writes 354 and flushes it only in BeforeFill: the reader must
// call it before it waits for the body.
func TestDotReaderFlushesBeforeWaiting(t *testing.T) {
	src := &scripted{pieces: []string{"DATA\r\n", "body\r\n.\r\n"}}
	br := NewReader(src, CommandBufferSize)
	flushedAt := []int{}
	br.BeforeFill = func() error { flushedAt = append(flushedAt, src.reads); return nil }
	br.ReadLine(512)
	if err := NewDotReader(br, 1<<20, 1000).Drain(); err != nil {
		t.Fatal(err)
	}
	if len(flushedAt) != 2 || flushedAt[1] != 1 {
		t.Errorf("BeforeFill before reads %v, want [0 1]", flushedAt)
	}
}

func TestDotReaderDrain(t *testing.T) {
	in := "line 1\r\nline 2\r\n..3\r\n.\r\nRSET\r\n"
	br := NewReader(strings.NewReader(in), CommandBufferSize)
	d := NewDotReader(br, 1<<20, 1000)
	p := make([]byte, 3)
	if n, err := d.Read(p); n != 3 || err != nil || string(p) != "lin" {
		t.Fatal(n, err, p)
	}
	if err := d.Drain(); err != nil {
		t.Fatal(err)
	}
	if d.Size() != int64(len("line 1\r\nline 2\r\n.3\r\n")) {
		t.Errorf("Size = %d", d.Size())
	}
	if err := d.Drain(); err != nil {
		t.Fatal("second Drain:", err)
	}
	if l, err := br.ReadLine(512); string(l) != "RSET" || err != nil {
		t.Fatal(l, err)
	}

	// Drain reports the errors a reader would have seen.
	for _, tt := range []struct {
		in  string
		err error
	}{
		{"123456789012\r\n.\r\n", ErrTooBig},
		{"a\nb\r\n.\r\n", ErrBareLineEnding},
		{"abc", io.ErrUnexpectedEOF},
	} {
		d := NewDotReader(NewReader(strings.NewReader(tt.in), 64), 10, 1000)
		if err := d.Drain(); err != tt.err {
			t.Errorf("Drain(%q) = %v, want %v", tt.in, err, tt.err)
		}
		if err := d.Drain(); err != tt.err {
			t.Errorf("second Drain(%q) = %v, want %v", tt.in, err, tt.err)
		}
	}
}

func TestDotReaderSizeCountsWholeBody(t *testing.T) {
	in := strings.Repeat("0123456789abcdef\r\n", 100) + ".\r\n"
	d := NewDotReader(NewReader(strings.NewReader(in), 64), 100, 1000)
	if err := d.Drain(); err != ErrTooBig {
		t.Fatal(err)
	}
	if d.Size() != 1800 {
		t.Errorf("Size = %d, want 1800 (the whole body, for logs)", d.Size())
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestDotReaderWriteToError(t *testing.T) {
	in := "a\r\n..b\r\nc\r\n.\r\n"
	d := NewDotReader(NewReader(strings.NewReader(in), 64), 1<<20, 1000)
	if _, err := d.WriteTo(&failWriter{n: 1}); err == nil || err.Error() != "disk full" {
		t.Fatalf("WriteTo = %v", err)
	}
	if err := d.Drain(); err != nil {
		t.Fatalf("Drain after a failed write = %v", err)
	}
}

func TestDotReaderAllocs(t *testing.T) {
	msg := []byte(strings.Repeat("Some text of a line that goes on for a while like mail does, 76 chars.\r\n", 100) + ".\r\n")
	src := bytes.NewReader(msg)
	br := NewReader(src, CommandBufferSize)
	br.Grow(BodyBufferSize)
	allocs := testing.AllocsPerRun(100, func() {
		src.Reset(msg)
		br.Reset(src)
		d := NewDotReader(br, 1<<20, 1000)
		if _, err := d.WriteTo(io.Discard); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("%v allocations per message", allocs)
	}
}

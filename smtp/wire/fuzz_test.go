package wire

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/smtpkit/smtpkit/smtp"
)

func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{
		"HELO client.example", "ehlo x", "MAIL FROM:<a@b> SIZE=10", "DATA", "quit", "", " ", "HELO a\x00b",
		"HELO a\rb", "HELO \xff", "x\xc3", "STARTTLS", "BDAT 10 LAST", "ǆ x", "ı",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		c, err := ParseCommand(line)
		if err != nil {
			if c != (Command{}) {
				t.Fatalf("ParseCommand(%q) = %+v with %v", line, c, err)
			}
			return
		}
		if !utf8.ValidString(c.Verb) || !utf8.ValidString(c.Arg) || strings.ContainsAny(c.Verb+c.Arg, "\x00\r\n") {
			t.Fatalf("ParseCommand(%q) = %+v", line, c)
		}
		if strings.ContainsRune(c.Verb, ' ') || c.Verb != strings.ToUpper(c.Verb) {
			t.Fatalf("ParseCommand(%q): verb %q", line, c.Verb)
		}
		if !bytes.HasSuffix(line, []byte(c.Arg)) {
			t.Fatalf("ParseCommand(%q): arg %q is not the end of the line", line, c.Arg)
		}
		// Parsing what it parsed to changes nothing.
		again := c.Verb
		if c.Arg != "" {
			again += " " + c.Arg
		}
		c2, err := ParseCommand([]byte(again))
		if err != nil && again != "" || err == nil && c2 != c {
			t.Fatalf("ParseCommand(%q) = %+v, but %q gives %+v, %v", line, c, again, c2, err)
		}
	})
}

func FuzzParseParams(f *testing.F) {
	for _, s := range []string{"SIZE=10 BODY=8BITMIME", "SMTPUTF8", "", "  A=1  B ", "A=b=c", "K=é", "AUTH=<>", "=", "K=a\tb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParseParams(s)
		if err != nil {
			return
		}
		var parts []string
		for _, p := range ps {
			if !isKeyword(p.Key) || p.Key != strings.ToUpper(p.Key) {
				t.Fatalf("ParseParams(%q): key %q", s, p.Key)
			}
			if p.Bare != (p.Value == "") || strings.ContainsAny(p.Value, " =\x7f") {
				t.Fatalf("ParseParams(%q): param %+v", s, p)
			}
			for i := 0; i < len(p.Value); i++ {
				if p.Value[i] < 33 {
					t.Fatalf("ParseParams(%q): value %q", s, p.Value)
				}
			}
			if p.Bare {
				parts = append(parts, p.Key)
			} else {
				parts = append(parts, p.Key+"="+p.Value)
			}
		}
		again, err := ParseParams(strings.Join(parts, " "))
		if err != nil || len(again) != len(ps) {
			t.Fatalf("ParseParams(%q) = %+v, but its rendering gives %+v, %v", s, ps, again, err)
		}
		for i := range ps {
			if again[i] != ps[i] {
				t.Fatalf("ParseParams(%q) = %+v, but its rendering gives %+v", s, ps, again)
			}
		}
	})
}

func FuzzParsePathArg(f *testing.F) {
	for _, s := range []string{
		"FROM:<a@b.example> SIZE=10 BODY=8BITMIME", "from: <a@b>", "FROM:<>", "TO:<postmaster>",
		`TO:<"a b"@x.example> NOTIFY=NEVER`, "FROM:a@b.example SMTPUTF8", "FROM:<a@b>SIZE=1", "TO:<@r.example:u@x.example>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		for _, prefix := range []string{"FROM:", "TO:"} {
			addr, params, err := ParsePathArg(arg, prefix)
			if err != nil {
				continue
			}
			if len(addr.Path()) > smtp.MaxPathLength {
				t.Fatalf("ParsePathArg(%q): %q too long", arg, addr.Path())
			}
			// Rendering it back parses to the same thing.
			line := prefix + addr.Path()
			for _, p := range params {
				line += " " + p.Key
				if !p.Bare {
					line += "=" + p.Value
				}
			}
			addr2, params2, err := ParsePathArg(line, prefix)
			if err != nil || addr2 != addr || len(params2) != len(params) {
				t.Fatalf("ParsePathArg(%q) = %#v %+v; %q gives %#v %+v %v", arg, addr, params, line, addr2, params2, err)
			}
		}
	})
}

// refReadLines is ReadLine spelled out: lines end at LF, one CR before it
// is dropped, a line longer than max (counting its line ending as RFC 5321
// counts CRLF) is an error, and input ending mid-line is unexpected.
func refReadLines(in []byte, max int) []lineResult {
	var out []lineResult
	for {
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			if len(in) > 0 {
				return append(out, lineResult{"", io.ErrUnexpectedEOF})
			}
			return append(out, lineResult{"", io.EOF})
		}
		line := in[:i]
		in = in[i+1:]
		if len(line)+1 > max {
			out = append(out, lineResult{"", ErrLineTooLong})
			continue
		}
		out = append(out, lineResult{string(bytes.TrimSuffix(line, []byte("\r"))), nil})
	}
}

func FuzzReadLine(f *testing.F) {
	f.Add([]byte("HELO a\r\nMAIL FROM:<a@b>\nQUIT\r\n"), uint16(512), uint8(0))
	f.Add([]byte("12345678\r\n123456789\r\nok\r\n"), uint16(10), uint8(1))
	f.Add([]byte("abc"), uint16(2), uint8(3))
	f.Add([]byte("\r\n\n\r\r\n"), uint16(1), uint8(2))
	f.Add(bytes.Repeat([]byte("x"), 5000), uint16(512), uint8(0))
	f.Fuzz(func(t *testing.T, in []byte, max16 uint16, how uint8) {
		max := int(max16 % 8192)
		want := refReadLines(in, max)
		var src io.Reader = bytes.NewReader(in)
		switch how % 4 {
		case 1:
			src = iotest.OneByteReader(src)
		case 2:
			src = iotest.HalfReader(src)
		case 3:
			src = &chunkReader{data: in, n: int(how)/4 + 1}
		}
		br := NewReader(src, 64)
		got := readLines(br, max)
		if len(got) != len(want) {
			t.Fatalf("ReadLine(%q, %d): %v, want %v", in, max, got, want)
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("ReadLine(%q, %d): line %d %v, want %v", in, max, i, got[i], want[i])
			}
		}
	})
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"250 OK\r\n", "250-a\r\n250 2.0.0 b\r\n", "550 5.1.1 x\r\n", "2", "250-a\r\n251 b\r\n", "354\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := NewReader(bytes.NewReader(in), CommandBufferSize)
		for {
			r, err := br.ReadReply(512)
			if err != nil {
				return
			}
			if r.Code < 200 || r.Code > 599 || len(r.Lines) == 0 || len(r.Lines) > maxReplyLines {
				t.Fatalf("ReadReply(%q) = %+v", in, r)
			}
			if r.EnhancedCode != (smtp.EnhancedCode{}) && r.EnhancedCode[0] != r.Code/100 {
				t.Fatalf("ReadReply(%q) = %+v", in, r)
			}
		}
	})
}

// FuzzDotReader checks the DATA decoder against refDecode, by every way of
// reading, with the input cut into reads of every size.
func FuzzDotReader(f *testing.F) {
	seeds := []string{
		"Subject: x\r\n\r\nHello\r\n.\r\nQUIT\r\n", ".\r\n", "..x\r\n...\r\n.\r\n", "a\r\n\n.\nb\r\n.\r\n",
		"a\r.\rb\r\n.\r\n", "a\n.\r\n", "\r\n.\n", ".\n", "x\r\n.\r", "12345678901\r\n.\r\nNOOP\r\n",
		"ab\r\r\n.\r\n", "\r", "a\r\n.b\r\n.\r\n",
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint16(10+i), uint16(20+3*i), uint8(i))
	}
	f.Add([]byte(strings.Repeat("y", 40000)+"\r\n.\r\nQUIT\r\n"), uint16(1000), uint16(50000), uint8(0))
	f.Add([]byte(strings.Repeat("y", 40000)+"\ry\r\n.\r\n"), uint16(1000), uint16(50000), uint8(5))
	f.Fuzz(func(t *testing.T, in []byte, maxLine16, maxSize16 uint16, how uint8) {
		maxLine := int(maxLine16%4096) + 1
		maxSize := int64(maxSize16)
		wantBody, wantErr, wantRest := refDecode(in, maxSize, maxLine)
		inSync := wantErr == nil || wantErr == ErrTooBig || wantErr == ErrTextLineTooLong

		modes := []int{0, int(how) % len(readModes)}
		for _, mi := range modes {
			m := readModes[mi]
			var src io.Reader = bytes.NewReader(in)
			if how&0x80 != 0 {
				src = &chunkReader{data: in, n: int(how&0x7f) + 1}
			}
			got := decodeWith(src, maxSize, maxLine, m.read)
			if got.err != wantErr || got.body != string(wantBody) {
				t.Fatalf("[%s] decode(%q, line %d, size %d) = %q, %v; want %q, %v",
					m.name, in, maxLine, maxSize, got.body, got.err, wantBody, wantErr)
			}
			if inSync && got.rest != string(wantRest) {
				t.Fatalf("[%s] decode(%q): rest %q, want %q", m.name, in, got.rest, wantRest)
			}
			if wantErr == nil && got.size != int64(len(wantBody)) {
				t.Fatalf("[%s] decode(%q): Size %d, want %d", m.name, in, got.size, len(wantBody))
			}
		}
		// Drain agrees too.
		d := NewDotReader(NewReader(bytes.NewReader(in), 64), maxSize, maxLine)
		if err := d.Drain(); err != wantErr {
			t.Fatalf("Drain(%q) = %v, want %v", in, err, wantErr)
		}
	})
}

// FuzzDotWriter checks that whatever a client sends through DotWriter, the
// server's DotReader reads back, with line endings made CRLF.
func FuzzDotWriter(f *testing.F) {
	for _, s := range []string{"", "Hello", ".", "a\n.\nb", "a\r.\r", "\r\n.\r\n", "..\r\n", "x\r"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, cut uint8) {
		var wire bytes.Buffer
		dw := NewDotWriter(&wire)
		// Write in pieces, so that state carries across Writes.
		for p, n := body, int(cut%16)+1; len(p) > 0; {
			k := min(n, len(p))
			if _, err := dw.Write(p[:k]); err != nil {
				t.Fatal(err)
			}
			p = p[k:]
		}
		if err := dw.Close(); err != nil {
			t.Fatal(err)
		}
		// Normalise: every CR, LF or CRLF is one CRLF; a last line gets one.
		var want []byte
		for i := 0; i < len(body); i++ {
			switch body[i] {
			case '\r':
				if i+1 < len(body) && body[i+1] == '\n' {
					i++
				}
				want = append(want, '\r', '\n')
			case '\n':
				want = append(want, '\r', '\n')
			default:
				want = append(want, body[i])
			}
		}
		if len(want) > 0 && !bytes.HasSuffix(want, []byte("\r\n")) {
			want = append(want, '\r', '\n')
		}
		wire.WriteString("NEXT\r\n")
		got := decodeWith(bytes.NewReader(wire.Bytes()), 1<<30, wire.Len(), readModes[0].read)
		if got.err != nil || got.body != string(want) || got.rest != "NEXT\r\n" {
			t.Fatalf("body %q sent as %q read back as %q, %v, rest %q; want %q", body, wire.Bytes(), got.body, got.err, got.rest, want)
		}
	})
}

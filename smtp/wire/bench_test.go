package wire

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/textproto"
	"testing"
)

// benchMessage returns a dot-stuffed DATA stream of about size bytes:
// headers, then 76-character lines in paragraphs, some starting with a
// dot, then the terminating line.
func benchMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n" +
		"Subject: quarterly numbers\r\nMessage-ID: <1234.5678@example.org>\r\n" +
		"Date: Sat, 09 Mar 2024 14:05:07 -0500\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n")
	const text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore magna aliqua."
	for i := 0; b.Len() < size; i++ {
		switch {
		case i%23 == 7:
			b.WriteString("..." + text[:73]) // a line that began with ".."
		case i%11 == 10:
			// blank line between paragraphs
		default:
			off := i % 40
			b.WriteString(text[off : off+76])
		}
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	return b.Bytes()
}

func BenchmarkDotReader(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10} {
		msg := benchMessage(size)
		b.Run(fmt.Sprintf("WriteTo/%dKiB", size>>10), func(b *testing.B) {
			src := bytes.NewReader(msg)
			br := NewReader(src, CommandBufferSize)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(msg)
				br.Reset(src)
				d := NewDotReader(br, 1<<30, 1000)
				if _, err := d.WriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("Read4KiB/%dKiB", size>>10), func(b *testing.B) {
			src := bytes.NewReader(msg)
			br := NewReader(src, CommandBufferSize)
			p := make([]byte, 4096)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(msg)
				br.Reset(src)
				d := NewDotReader(br, 1<<30, 1000)
				for {
					_, err := d.Read(p)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		// The byte-at-a-time state machine of net/textproto, for scale.
		b.Run(fmt.Sprintf("textproto/%dKiB", size>>10), func(b *testing.B) {
			src := bytes.NewReader(msg)
			bufr := bufio.NewReaderSize(src, BodyBufferSize)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(msg)
				bufr.Reset(src)
				if _, err := io.Copy(io.Discard, textproto.NewReader(bufr).DotReader()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

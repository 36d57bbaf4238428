package wire

import (
	"io"
)

// chunkReader returns its input in reads of at most n bytes, like a TCP
// connection delivering segments.
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.n, len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// splitReader returns its input in the given pieces, one per read (a piece
// larger than the read buffer is continued in the next read).
type splitReader struct {
	pieces [][]byte
}

func (s *splitReader) Read(p []byte) (int, error) {
	for len(s.pieces) > 0 && len(s.pieces[0]) == 0 {
		s.pieces = s.pieces[1:]
	}
	if len(s.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.pieces[0])
	s.pieces[0] = s.pieces[0][n:]
	return n, nil
}

// splitAt cuts s at the given offsets.
func splitAt(s string, at ...int) *splitReader {
	var r splitReader
	prev := 0
	for _, i := range at {
		r.pieces = append(r.pieces, []byte(s[prev:i]))
		prev = i
	}
	r.pieces = append(r.pieces, []byte(s[prev:]))
	return &r
}

// rest returns everything br still has, buffered or not.
func rest(br *Reader) string {
	var out []byte
	for {
		p, err := br.Next(1 << 20)
		out = append(out, p...)
		if err != nil {
			return string(out)
		}
	}
}

// onlyReader hides any WriterTo, so io.Copy must use Read.
type onlyReader struct{ io.Reader }

package delivery

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/smtpkit/smtpkit/smtp"
)

func TestHopCounter(t *testing.T) {
	hdr := func(n int) string {
		return strings.Repeat("Received: from a by b; date\r\n\tcontinued\r\n", n) + "Subject: x\r\n\r\n" +
			strings.Repeat("Received: in the body does not count\r\n", 100)
	}
	for _, tc := range []struct {
		n, max int
		ok     bool
	}{{0, 0, true}, {50, 0, true}, {51, 0, false}, {3, 2, false}, {2, 2, true}} {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(hdr(tc.n))
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			h := &HopCounter{R: r, Max: tc.max}
			_, err := io.ReadAll(h)
			var se *smtp.Error
			if tc.ok && err != nil || !tc.ok && (!errors.As(err, &se) || se.Code != 554) {
				t.Errorf("%d hops, max %d (one byte %v): %v", tc.n, tc.max, oneByte, err)
			}
			if tc.ok && h.Hops() != tc.n {
				t.Errorf("counted %d hops, want %d", h.Hops(), tc.n)
			}
		}
	}
}

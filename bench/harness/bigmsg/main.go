// Command bigmsg sends one large message over SMTP, generated on the fly
// (78 letters and CRLF a line), and checks that the server accepts it:
//
//	bigmsg --addr 127.0.0.1:2525 --size 100000000
//
// It prints the bytes sent, the time taken and the server's final reply, and
// exits non-zero unless that reply is 250.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2525", "server `address`")
	size := flag.Int64("size", 100_000_000, "body size in `bytes` (rounded up to whole lines)")
	flag.Parse()
	if err := run(*addr, *size); err != nil {
		fmt.Fprintln(os.Stderr, "bigmsg:", err)
		os.Exit(1)
	}
}

func run(addr string, size int64) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	r := bufio.NewReader(c)
	w := bufio.NewWriterSize(c, 64<<10)
	expect := func(code string) (string, error) {
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return last, err
			}
			last = strings.TrimRight(line, "\r\n")
			if len(last) < 4 || last[3] != '-' {
				break
			}
		}
		if !strings.HasPrefix(last, code) {
			return last, fmt.Errorf("want %s, got %q", code, last)
		}
		return last, nil
	}
	cmd := func(line, code string) (string, error) {
		fmt.Fprintf(w, "%s\r\n", line)
		if err := w.Flush(); err != nil {
			return "", err
		}
		return expect(code)
	}
	if _, err := expect("220"); err != nil {
		return err
	}
	for _, step := range [][2]string{
		{"EHLO client.example", "250"},
		{fmt.Sprintf("MAIL FROM:<sender@client.example> SIZE=%d", size), "250"},
		{"RCPT TO:<rcpt@bench.example>", "250"},
		{"DATA", "354"},
	} {
		if _, err := cmd(step[0], step[1]); err != nil {
			return fmt.Errorf("%s: %w", step[0], err)
		}
	}
	start := time.Now()
	line := []byte(strings.Repeat("abcdefghijklmnopqrstuvwxyz", 3) + "\r\n")
	hdr := "From: <sender@client.example>\r\nTo: <rcpt@bench.example>\r\nSubject: big\r\n\r\n"
	sent, _ := io.WriteString(w, hdr)
	total := int64(sent)
	for total < size {
		n, err := w.Write(line)
		total += int64(n)
		if err != nil {
			return fmt.Errorf("after %d bytes: %w", total, err)
		}
	}
	reply, err := cmd(".", "250")
	if err != nil {
		return fmt.Errorf("end of data after %d bytes: %w", total, err)
	}
	elapsed := time.Since(start)
	cmd("QUIT", "221")
	fmt.Printf("sent %d bytes in %.2fs (%.0f MB/s); server: %s\n", total, elapsed.Seconds(), float64(total)/elapsed.Seconds()/1e6, reply)
	return nil
}

package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smtpkit/smtpkit/maildir"
	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
	"github.com/smtpkit/smtpkit/smtptest"
)

func openMaildir(t *testing.T) (*maildir.Dir, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mail")
	md, err := maildir.Open(dir, maildir.Options{Hostname: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return md, dir
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestSavesMessage(t *testing.T) {
	md, dir := openMaildir(t)
	var out bytes.Buffer
	srv := smtptest.NewServer(t, saver(md, &out))

	body := "Subject: keep me\r\n\r\nSaved.\r\n"
	if err := srv.SendMail(t, "alice@example.org", []string{"bob@example.com"}, []byte(body)); err != nil {
		t.Fatalf("SendMail: %v", err)
	}
	// The 250 came after Deliver returned, so the file is there now.
	names := files(t, filepath.Join(dir, "new"))
	if len(names) != 1 {
		t.Fatalf("new/ holds %q, want one file", names)
	}
	data, err := os.ReadFile(filepath.Join(dir, "new", names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(data, []byte("Received: from localhost")) || !bytes.HasSuffix(data, []byte(body)) {
		t.Errorf("file holds:\n%s", data)
	}
	if !strings.Contains(string(data), "for <bob@example.com>") {
		t.Errorf("Received header lacks the recipient:\n%s", data)
	}
	if want := "saved new/" + names[0] + " from=<alice@example.org> to=[bob@example.com]\n"; out.String() != want {
		t.Errorf("printed %q, want %q", out.String(), want)
	}
	if tmp := files(t, filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ holds %q", tmp)
	}
}

// A body over the limit is refused and leaves no file, even half written.
func TestTooBigLeavesNothing(t *testing.T) {
	md, dir := openMaildir(t)
	srv := smtptest.NewServer(t, saver(md, new(bytes.Buffer)),
		smtptest.WithConfig(func(s *server.Server) { s.MaxMessageBytes = 1000 }))

	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 98)+"\r\n", 100)
	err := srv.SendMail(t, "alice@example.org", []string{"bob@example.com"}, []byte(big))
	var se *smtp.Error
	if !errors.As(err, &se) || se.Code != 552 {
		t.Fatalf("SendMail: got %v, want 552", err)
	}
	for _, sub := range []string{"new", "tmp"} {
		if names := files(t, filepath.Join(dir, sub)); len(names) != 0 {
			t.Errorf("%s/ holds %q", sub, names)
		}
	}
}

//go:build linux

package durable_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/smtpkit/smtpkit/internal/crashfs"
	"github.com/smtpkit/smtpkit/internal/durable"
)

// TestMkdirAll: every level MkdirAll creates survives a power cut, which
// os.MkdirAll alone does not promise.
func TestMkdirAll(t *testing.T) {
	fsys := crashfs.ForTest(t)
	if err := os.MkdirAll(filepath.Join(fsys.Dir, "plain", "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(fsys.Cut(t), "plain")); err == nil {
		t.Fatal("os.MkdirAll's directories survived the cut: crashfs is not modelling the loss")
	}
	if err := durable.MkdirAll(filepath.Join(fsys.Dir, "a", "b", "c"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := durable.MkdirAll(filepath.Join(fsys.Dir, "a", "b", "c"), 0o700); err != nil { // exists: nothing to do
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(fsys.Cut(t), "a", "b", "c")); err != nil || !fi.IsDir() {
		t.Fatalf("after durable.MkdirAll and a cut: %v", err)
	}
	f := filepath.Join(fsys.Dir, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := durable.MkdirAll(filepath.Join(f, "sub"), 0o700); err == nil {
		t.Error("MkdirAll under a regular file succeeded")
	}
}

//go:build linux

package crashfs

import (
	"os"
	"path/filepath"
	"testing"
)

// snapshot returns the durable tree as path → content ("/" for directories).
func snapshot(t *testing.T, f *FS) map[string]string {
	t.Helper()
	dir := f.Cut(t)
	got := map[string]string{}
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case rel == ".":
		case d.IsDir():
			got[rel] = "/"
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			got[rel] = string(b)
		}
		return nil
	})
	return got
}

func syncPath(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDurability walks through what survives and what does not, each step
// checked against the snapshot it must give.
func TestDurability(t *testing.T) {
	f := ForTest(t)
	at := func(p string) string { return filepath.Join(f.Dir, p) }
	steps := []struct {
		name string
		do   func()
		want map[string]string
	}{{
		name: "a new file and directory, nothing synced",
		do: func() {
			if err := os.Mkdir(at("d"), 0o700); err != nil {
				t.Fatal(err)
			}
			writeFile(t, at("d/a"), "one")
		},
		want: map[string]string{},
	}, {
		name: "the file synced, its directory not",
		do:   func() { syncPath(t, at("d/a")) },
		want: map[string]string{},
	}, {
		name: "the directory synced, its parent not",
		do:   func() { syncPath(t, at("d")) },
		want: map[string]string{},
	}, {
		name: "the root synced: the chain is durable",
		do:   func() { syncPath(t, f.Dir) },
		want: map[string]string{"d": "/", "d/a": "one"},
	}, {
		name: "rewritten without fsync: the old data survives",
		do:   func() { writeFile(t, at("d/a"), "two!") },
		want: map[string]string{"d": "/", "d/a": "one"},
	}, {
		name: "renamed, directory not synced: the old name survives",
		do: func() {
			syncPath(t, at("d/a"))
			if err := os.Rename(at("d/a"), at("d/b")); err != nil {
				t.Fatal(err)
			}
		},
		want: map[string]string{"d": "/", "d/a": "two!"},
	}, {
		name: "directory synced: only the new name",
		do:   func() { syncPath(t, at("d")) },
		want: map[string]string{"d": "/", "d/b": "two!"},
	}, {
		name: "unlinked, not synced: still there",
		do: func() {
			if err := os.Remove(at("d/b")); err != nil {
				t.Fatal(err)
			}
		},
		want: map[string]string{"d": "/", "d/b": "two!"},
	}, {
		name: "synced: gone",
		do:   func() { syncPath(t, at("d")) },
		want: map[string]string{"d": "/"},
	}}
	for _, s := range steps {
		s.do()
		got := snapshot(t, f)
		if len(got) != len(s.want) {
			t.Fatalf("%s: snapshot %v, want %v", s.name, got, s.want)
		}
		for k, v := range s.want {
			if got[k] != v {
				t.Fatalf("%s: snapshot %v, want %v", s.name, got, s.want)
			}
		}
	}
	// What programs see is the current state throughout.
	ents, err := os.ReadDir(at("d"))
	if err != nil || len(ents) != 0 {
		t.Fatalf("d holds %v, %v; want nothing", ents, err)
	}
	writeFile(t, at("d/c"), "abc")
	if b, err := os.ReadFile(at("d/c")); string(b) != "abc" || err != nil {
		t.Fatalf("read back %q, %v", b, err)
	}
	files, dirs := f.Syncs()
	if files != 2 || dirs != 4 {
		t.Errorf("Syncs() = %d, %d; want 2 file and 4 directory fsyncs", files, dirs)
	}
}

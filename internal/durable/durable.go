// Package durable makes directory entries survive a crash: a file or a
// directory that was created, renamed or removed is durable only once the
// directory holding its entry has been fsynced (POSIX leaves entries in the
// cache until then). The Maildir and the queue spool both depend on it.
package durable

import (
	"fmt"
	"os"
	"path/filepath"
)

// MkdirAll creates dir and any missing parents with mode perm, like
// os.MkdirAll, and then syncs the parent of every directory it created, so
// that none of them can vanish in a crash with what is later put in them.
func MkdirAll(dir string, perm os.FileMode) error {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil {
			if !fi.IsDir() {
				return fmt.Errorf("%s is not a directory", d)
			}
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return err
	}
	// All of them are durable when this returns; a crash half-way leaves
	// directories that are merely empty, which the next call completes.
	for _, d := range missing {
		if err := SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

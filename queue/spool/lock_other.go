//go:build !unix

package spool

import (
	"errors"
	"os"
	"path/filepath"
)

// ErrLocked means another process has the spool open.
var ErrLocked = errors.New("spool: in use by another process")

// lockDir holds the lock file open; on Windows an open file with no
// sharing would be the lock, which os.OpenFile does not offer, so two
// processes are not prevented here: run one server per data directory.
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
}

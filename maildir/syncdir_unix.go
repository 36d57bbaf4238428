//go:build !windows

package maildir

import (
	"fmt"
	"os"
)

// syncDir fsyncs a directory, which is what makes a rename or create inside it durable (POSIX leaves directory
// entries in the cache until then; ext4 and XFS honour the fsync, darwin's os.File.Sync uses F_FULLFSYNC).
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

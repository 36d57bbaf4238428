//go:build !windows

package durable

import (
	"fmt"
	"os"
)

// SyncDir fsyncs a directory, which makes the entries created, renamed or
// removed in it durable (ext4 and XFS honour it; darwin's os.File.Sync uses
// F_FULLFSYNC).
func SyncDir(dir string) error {
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

package spool

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync flushes a segment's data and the size that finds it; the
// other metadata (times) need not reach the disk.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}

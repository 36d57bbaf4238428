//go:build !unix

package daemon

// freeSpace is unknown here: the check at MAIL is skipped, and a full disk
// is still answered 452 4.3.1 when a write fails.
func freeSpace(dir string) (int64, bool) { return 0, false }

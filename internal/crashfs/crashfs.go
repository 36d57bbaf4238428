//go:build linux

// Package crashfs is a FUSE file system for tests of durability. Programs
// use it like any other; besides what they see, it keeps what a power cut
// would leave under the POSIX rules a careful program must assume: a file's
// data as of its last fsync or fdatasync, and a directory's entries as of
// the last fsync of that directory. Snapshot writes that state into an
// ordinary directory, as the machine would find it after rebooting, while
// the programs go on: a test can "cut the power" at many moments of one run.
//
// Real file systems often keep more (ext4 commits a whole journal on any
// fsync), which is why a crash test on them cannot catch a missing fsync;
// this one keeps only what was asked for.
//
// It needs /dev/fuse and the right to mount (root); Mount says so when it
// cannot.
package crashfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// FS is a mounted crash-tracking file system.
type FS struct {
	Dir    string // the mount point
	server *fuse.Server
	root   *dir

	mu       sync.Mutex // guards every node's data and durable state
	fsyncs   int
	dirSyncs int
}

type node interface{ durableCopy(path string) error }

// Mount mounts an empty crashfs on mountpoint, an existing empty directory.
func Mount(mountpoint string) (*FS, error) {
	f := &FS{Dir: mountpoint}
	f.root = &dir{fsys: f, mode: 0o755, durable: map[string]node{}}
	zero := time.Duration(0)
	server, err := fs.Mount(mountpoint, f.root, &fs.Options{
		// No caching of names or attributes: every lookup must see the
		// tree as it is.
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		MountOptions: fuse.MountOptions{
			FsName:      "crashfs",
			Name:        "crashfs",
			DirectMount: true, // as root, without fusermount
		},
	})
	if err != nil {
		return nil, fmt.Errorf("crashfs: mount: %w", err)
	}
	f.server = server
	return f, nil
}

// Unmount unmounts the file system; the programs using it must have ended.
func (f *FS) Unmount() error {
	var err error
	for range 50 { // the kernel may still hold the last files for a moment
		if err = f.server.Unmount(); err == nil {
			f.server.Wait()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return err
}

// Syncs returns how many file and directory fsyncs the file system has
// seen, so that a test can tell that the program under test made some.
func (f *FS) Syncs() (files, dirs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fsyncs, f.dirSyncs
}

// Snapshot writes what would survive a power cut now into to, an existing
// directory: the durable entries of every durably reachable directory, and
// each file's data as of its last fsync (empty if it never had one).
func (f *FS) Snapshot(to string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.root.durableChildren(to)
}

// dir is a directory. Its current entries are go-fuse's children of its
// Inode; durable is what its last fsync saw.
type dir struct {
	fs.Inode
	fsys    *FS
	mode    uint32
	durable map[string]node
}

var (
	_ fs.NodeMkdirer   = (*dir)(nil)
	_ fs.NodeMknoder   = (*dir)(nil)
	_ fs.NodeCreater   = (*dir)(nil)
	_ fs.NodeUnlinker  = (*dir)(nil)
	_ fs.NodeRmdirer   = (*dir)(nil)
	_ fs.NodeRenamer   = (*dir)(nil)
	_ fs.NodeFsyncer   = (*dir)(nil)
	_ fs.NodeGetattrer = (*dir)(nil)
	_ fs.NodeSetattrer = (*dir)(nil)
	_ fs.NodeStatfser  = (*dir)(nil)
)

func (d *dir) durableCopy(path string) error {
	if err := os.Mkdir(path, 0o700); err != nil {
		return err
	}
	return d.durableChildren(path)
}

func (d *dir) durableChildren(path string) error {
	for name, n := range d.durable {
		if err := n.durableCopy(filepath.Join(path, name)); err != nil {
			return err
		}
	}
	return nil
}

// Statfs reports a roomy disk (1 GiB free), so that programs that check
// for free space before writing (the daemon at MAIL) go ahead.
func (d *dir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = 1 << 18
	out.Bfree = 1 << 18
	out.Bavail = 1 << 18
	out.NameLen = 255
	return 0
}

func (d *dir) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fsys.mu.Lock()
	defer d.fsys.mu.Unlock()
	out.Mode = syscall.S_IFDIR | d.mode
	return 0
}

func (d *dir) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	d.fsys.mu.Lock()
	defer d.fsys.mu.Unlock()
	if m, ok := in.GetMode(); ok {
		d.mode = m & 0o7777
	}
	out.Mode = syscall.S_IFDIR | d.mode
	return 0
}

func (d *dir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	child := &dir{fsys: d.fsys, mode: mode & 0o7777, durable: map[string]node{}}
	out.Mode = syscall.S_IFDIR | child.mode
	return d.NewInode(ctx, child, fs.StableAttr{Mode: syscall.S_IFDIR}), 0
}

func (d *dir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	child := &file{fsys: d.fsys, mode: mode & 0o7777}
	out.Mode = syscall.S_IFREG | child.mode
	return d.NewInode(ctx, child, fs.StableAttr{Mode: syscall.S_IFREG}), nil, 0, 0
}

// Mknod makes what bind(2) needs for a Unix socket (a control socket in the
// data directory). Sockets do not outlive a reboot, so one never survives
// a snapshot.
func (d *dir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if mode&syscall.S_IFMT != syscall.S_IFSOCK {
		return nil, syscall.EPERM
	}
	out.Mode = mode
	return d.NewInode(ctx, &socket{mode: mode}, fs.StableAttr{Mode: syscall.S_IFSOCK}), 0
}

type socket struct {
	fs.Inode
	mode uint32
}

func (s *socket) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	out.Mode = s.mode
	return 0
}

// Unlink, Rmdir and Rename change only the current entries, which go-fuse
// keeps once these return success; the durable ones wait for an fsync.
func (d *dir) Unlink(ctx context.Context, name string) syscall.Errno { return 0 }

func (d *dir) Rmdir(ctx context.Context, name string) syscall.Errno {
	if ch := d.GetChild(name); ch != nil && len(ch.Children()) > 0 {
		return syscall.ENOTEMPTY
	}
	return 0
}

func (d *dir) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if flags != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE and the like: not needed
	}
	if ch := newParent.EmbeddedInode().GetChild(newName); ch != nil && ch.IsDir() && len(ch.Children()) > 0 {
		return syscall.ENOTEMPTY
	}
	return 0
}

// Fsync of a directory makes its current entries durable.
func (d *dir) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	children := d.Children()
	d.fsys.mu.Lock()
	defer d.fsys.mu.Unlock()
	d.fsys.dirSyncs++
	d.durable = make(map[string]node, len(children))
	for name, ch := range children {
		if n, ok := ch.Operations().(node); ok {
			d.durable[name] = n
		}
	}
	return 0
}

// file is a regular file: data is what programs read, synced what an fsync
// last made durable.
type file struct {
	fs.Inode
	fsys   *FS
	mode   uint32
	data   []byte
	synced []byte
}

var (
	_ fs.NodeOpener    = (*file)(nil)
	_ fs.NodeReader    = (*file)(nil)
	_ fs.NodeWriter    = (*file)(nil)
	_ fs.NodeFsyncer   = (*file)(nil)
	_ fs.NodeGetattrer = (*file)(nil)
	_ fs.NodeSetattrer = (*file)(nil)
)

func (f *file) durableCopy(path string) error { return os.WriteFile(path, f.synced, 0o600) }

func (f *file) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 {
		f.fsys.mu.Lock()
		f.data = f.data[:0]
		f.fsys.mu.Unlock()
	}
	return nil, fuse.FOPEN_DIRECT_IO, 0 // no page cache: every read and write comes here
}

func (f *file) Read(ctx context.Context, fh fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if off >= int64(len(f.data)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, f.data[off:])
	return fuse.ReadResultData(dest[:n]), 0
}

func (f *file) Write(ctx context.Context, fh fs.FileHandle, p []byte, off int64) (uint32, syscall.Errno) {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if end := off + int64(len(p)); end > int64(len(f.data)) {
		f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
	}
	copy(f.data[off:], p)
	return uint32(len(p)), 0
}

// Fsync and fdatasync make the data durable (the model has no metadata of
// a file's own worth keeping apart).
func (f *file) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	f.fsys.fsyncs++
	f.synced = append(f.synced[:0:0], f.data...)
	return 0
}

func (f *file) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	out.Mode = syscall.S_IFREG | f.mode
	out.Size = uint64(len(f.data))
	return 0
}

func (f *file) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if sz, ok := in.GetSize(); ok {
		if sz <= uint64(len(f.data)) {
			f.data = f.data[:sz]
		} else {
			f.data = append(f.data, make([]byte, sz-uint64(len(f.data)))...)
		}
	}
	if m, ok := in.GetMode(); ok {
		f.mode = m & 0o7777
	}
	out.Mode = syscall.S_IFREG | f.mode
	out.Size = uint64(len(f.data))
	return 0
}

// ForTest mounts a crashfs in a temporary directory of t, unmounted when the
// test ends (after the cleanups registered later, such as a daemon's stop),
// or skips the test where FUSE cannot be mounted.
func ForTest(t testing.TB) *FS {
	t.Helper()
	f, err := Mount(t.TempDir())
	if err != nil {
		t.Skipf("no FUSE here: %v", err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("crashfs: unmount: %v", err)
		}
	})
	return f
}

// Cut cuts the power: it writes what would survive now into a new
// temporary directory of t and returns that directory.
func (f *FS) Cut(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := f.Snapshot(dir); err != nil {
		t.Fatalf("crashfs: snapshot: %v", err)
	}
	return dir
}

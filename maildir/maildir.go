// Package maildir stores messages in a Maildir (cr.yp.to/proto/maildir.html), durably: a delivery is reported
// only after the message file and its directory entry in new/ have reached stable storage.
package maildir

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smtpkit/smtpkit/internal/durable"
)

// bufSize is the write buffer of one delivery: large enough that a 100 MB body costs ~1600 write calls, small
// enough that many concurrent deliveries stay cheap. Buffers are pooled per Dir, so memory is constant per delivery.
const bufSize = 64 << 10

// Options configure a Dir. The zero value is durable.
type Options struct {
	// NoSync skips every fsync (message files and directories). A delivery can then be lost or truncated by a
	// crash after Deliver returned. Only for tests and benchmarks that say so; zero means durable.
	NoSync bool

	// Hostname is the last part of every file name; empty means os.Hostname (or "localhost" if that fails).
	// '/' and ':' are escaped as \057 and \072, as the Maildir spec requires.
	Hostname string
}

// Dir is a Maildir that messages are delivered into. It is safe for concurrent use.
type Dir struct {
	path   string
	tmp    string
	new    string
	host   string
	pid    int
	noSync bool

	seq    atomic.Uint64 // the Q part of file names: unique per delivery within this Dir
	bufs   sync.Pool     // *[]byte of bufSize
	commit syncer        // group commit of fsync(new/)

	// dirSyncs counts the fsyncs of new/ that ran; tests assert that concurrent deliveries share them.
	dirSyncs atomic.Int64
	// syncHook, when set (by tests only), runs at the start of every fsync of new/, in the syncing goroutine.
	syncHook func()
}

// Open returns the Maildir at path, creating path and its tmp, new and cur subdirectories with mode 0700 if they
// are missing. Directories that already exist keep their mode.
func Open(path string, opts Options) (*Dir, error) {
	host := opts.Hostname
	if host == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		host = h
	}
	d := &Dir{
		path:   path,
		tmp:    filepath.Join(path, "tmp"),
		new:    filepath.Join(path, "new"),
		host:   escapeHost(host),
		pid:    os.Getpid(),
		noSync: opts.NoSync,
	}
	d.bufs.New = func() any { b := make([]byte, bufSize); return &b }
	d.commit.init(d.syncNew)

	// A new directory is durable only once its parent is synced: without
	// that, a crash could lose new/ (or the Maildir, or the data directory
	// above it) and with it every message delivered into it.
	for _, dir := range []string{path, d.tmp, d.new, filepath.Join(path, "cur")} {
		if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
			return nil, fmt.Errorf("maildir: %s is not a directory", dir)
		}
		mk := durable.MkdirAll
		if d.noSync {
			mk = os.MkdirAll
		}
		if err := mk(dir, 0o700); err != nil {
			return nil, fmt.Errorf("maildir: %w", err)
		}
	}
	return d, nil
}

// Path returns the Maildir's root directory, as given to Open.
func (d *Dir) Path() string { return d.path }

// Deliver writes header (may be nil; typically a Received: line ending in CRLF) followed by all of body into a
// new message and returns its unique file name, which is in the new/ subdirectory.
//
// The message is written to tmp/, fsynced, renamed into new/, and new/ is fsynced before Deliver returns nil. On
// any error, including a read error from body, nothing is left in tmp/ or new/.
//
// ctx is checked between reads of body and before the rename; a Read that blocks is the caller's to unblock (for
// example with a connection deadline). The rename is the commit point: after it Deliver ignores ctx and waits for
// the directory fsync, which takes as long as the disk does.
func (d *Dir) Deliver(ctx context.Context, header []byte, body io.Reader) (name string, err error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("maildir: %w", err)
	}
	name, f, err := d.create()
	if err != nil {
		return "", err
	}
	tmpPath := filepath.Join(d.tmp, name)
	defer func() {
		if err != nil {
			if f != nil {
				f.Close()
			}
			if rerr := os.Remove(tmpPath); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				err = errors.Join(err, fmt.Errorf("maildir: %w", rerr))
			}
		}
	}()

	if err := d.write(ctx, f, header, body); err != nil {
		return "", err
	}
	if !d.noSync {
		if err := f.Sync(); err != nil {
			return "", fmt.Errorf("maildir: %w", err)
		}
	}
	cerr := f.Close()
	f = nil
	if cerr != nil {
		return "", fmt.Errorf("maildir: %w", cerr)
	}
	// Last chance to give up: the file fsync above can take long enough for the session to have ended.
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("maildir: %w", err)
	}
	newPath := filepath.Join(d.new, name)
	if err := os.Rename(tmpPath, newPath); err != nil {
		return "", fmt.Errorf("maildir: %w", err)
	}
	if d.noSync {
		return name, nil
	}
	if err := d.commit.wait(); err != nil {
		// The entry may or may not be on disk; remove it so that an error means "not delivered" and the
		// sender retries. A crash before this removal is durable can leave a duplicate, never a loss.
		if rerr := os.Remove(newPath); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		return "", fmt.Errorf("maildir: %w", err)
	}
	return name, nil
}

// create makes a new empty file in tmp/ with a unique name. O_EXCL makes a name collision (two Dirs in one
// process on the same path, a reused pid, a clock step) an error we retry rather than a silent overwrite.
func (d *Dir) create() (string, *os.File, error) {
	var lastErr error
	for range 3 {
		name := d.uniqueName(time.Now())
		f, err := os.OpenFile(filepath.Join(d.tmp, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			return name, f, nil
		}
		lastErr = err
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	return "", nil, fmt.Errorf("maildir: %w", lastErr)
}

// uniqueName returns "<sec>.M<usec>P<pid>Q<seq>R<random>.<host>", the modern form of the Maildir spec's unique
// name: time and pid separate processes, Q separates deliveries within this Dir, and R guards against everything
// else (pid reuse after a reboot with the clock set back, several Dirs on one path).
func (d *Dir) uniqueName(now time.Time) string {
	var r [8]byte
	rand.Read(r[:]) // never returns an error (crypto/rand, Go 1.24+)
	b := make([]byte, 0, 96)
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, ".M"...)
	b = strconv.AppendInt(b, int64(now.Nanosecond()/1000), 10)
	b = append(b, 'P')
	b = strconv.AppendInt(b, int64(d.pid), 10)
	b = append(b, 'Q')
	b = strconv.AppendUint(b, d.seq.Add(1), 10)
	b = append(b, 'R')
	const hex = "0123456789abcdef"
	for _, c := range r {
		b = append(b, hex[c>>4], hex[c&0xf])
	}
	b = append(b, '.')
	b = append(b, d.host...)
	return string(b)
}

// escapeHost escapes the characters that cannot appear in the host part of a name: '/' separates paths and ':'
// starts the info part of names in cur/ (Maildir spec, "host").
func escapeHost(h string) string {
	return strings.NewReplacer("/", `\057`, ":", `\072`).Replace(h)
}

// write copies header and then body into f through a pooled buffer, so that memory per delivery is bufSize
// whatever the message size, and checks ctx between reads.
func (d *Dir) write(ctx context.Context, f *os.File, header []byte, body io.Reader) error {
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	buf := *bp

	n := 0
	if len(header) >= len(buf) {
		if _, err := f.Write(header); err != nil {
			return fmt.Errorf("maildir: %w", err)
		}
	} else {
		n = copy(buf, header)
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("maildir: %w", err)
		}
		m, rerr := body.Read(buf[n:])
		n += m
		if n == len(buf) || (rerr == io.EOF && n > 0) {
			if _, err := f.Write(buf[:n]); err != nil {
				return fmt.Errorf("maildir: %w", err)
			}
			n = 0
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return fmt.Errorf("maildir: reading body: %w", rerr)
		}
	}
}

// syncNew fsyncs the new/ directory; it is the operation the syncer batches.
func (d *Dir) syncNew() error {
	if d.syncHook != nil {
		d.syncHook()
	}
	d.dirSyncs.Add(1)
	return durable.SyncDir(d.new)
}

// syncer batches directory fsyncs (group commit). Each fsync is a generation. A caller that has just renamed a
// file into the directory needs a generation that started after its rename: an fsync that began earlier may
// have read the directory before the entry existed, while one that begins later is guaranteed to persist it
// (fsync of a directory persists all of its entries as of the call, not only those of one caller). So the
// caller waits for generation started+1: if no fsync is running it runs that one itself; if one is running it
// waits for it to finish and then for the next, which one of the waiters runs for all of them. While one fsync
// runs, every delivery that renames meanwhile is covered by the single next one.
//
// No goroutine outlives a call: the fsync runs in a waiting caller's goroutine, so Dir needs no Close.
type syncer struct {
	mu      sync.Mutex
	cond    sync.Cond
	fsync   func() error
	running bool
	started uint64 // generation of the most recent fsync that began
	done    uint64 // generation of the most recent fsync that finished
	errGen  uint64 // generation of the most recent fsync that failed
	err     error  // its error
	waiting int    // callers blocked in cond.Wait; tests use it to know the others have piled up
}

func (s *syncer) init(fsync func() error) {
	s.cond.L = &s.mu
	s.fsync = fsync
}

// wait returns once an fsync that started after the call has finished. It returns an error if that fsync, or
// any later one that finished before the caller woke, failed: after a failed fsync the kernel may have dropped
// the dirty state, so a later success does not prove the caller's entry was written.
func (s *syncer) wait() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	target := s.started + 1
	for s.done < target {
		if s.running {
			s.waiting++
			s.cond.Wait()
			s.waiting--
			continue
		}
		s.running = true
		s.started++
		gen := s.started
		s.mu.Unlock()
		err := s.fsync()
		s.mu.Lock()
		s.running = false
		s.done = gen
		if err != nil {
			s.errGen, s.err = gen, err
		}
		s.cond.Broadcast()
	}
	if s.errGen >= target {
		return s.err
	}
	return nil
}

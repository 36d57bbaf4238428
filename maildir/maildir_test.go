package maildir

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

var nameRE = regexp.MustCompile(`^[0-9]+\.M[0-9]+P[0-9]+Q[0-9]+R[0-9a-f]{16}\.[^/:]+$`)

// open returns a Dir in a fresh temporary directory.
func open(t testing.TB, opts Options) *Dir {
	t.Helper()
	d, err := Open(filepath.Join(t.TempDir(), "Maildir"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// names lists the files in one subdirectory of d.
func names(t testing.TB, d *Dir, sub string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(d.Path(), sub))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// assertDelivered checks that new/name holds exactly want, with mode 0600, and that tmp/ is empty.
func assertDelivered(t *testing.T, d *Dir, name string, want []byte) {
	t.Helper()
	if !nameRE.MatchString(name) {
		t.Errorf("name %q does not match %s", name, nameRE)
	}
	p := filepath.Join(d.Path(), "new", name)
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("content: got %d bytes, want %d (equal prefix %v)", len(got), len(want), bytes.HasPrefix(want, got))
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o600 {
			t.Errorf("mode: got %v, want 0600", m)
		}
	}
	if left := names(t, d, "tmp"); len(left) != 0 {
		t.Errorf("tmp/ not empty: %v", left)
	}
}

func TestOpen(t *testing.T) {
	root := filepath.Join(t.TempDir(), "a", "Maildir")
	d, err := Open(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []string{"tmp", "new", "cur"} {
		fi, err := os.Stat(filepath.Join(d.Path(), sub))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() {
			t.Errorf("%s is not a directory", sub)
		}
		if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want 0700", sub, fi.Mode().Perm())
		}
	}
	// Opening an existing Maildir again is fine.
	if _, err := Open(root, Options{}); err != nil {
		t.Errorf("reopen: %v", err)
	}

	// A file where a subdirectory belongs is an error, not a silent misdelivery.
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "new"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bad, Options{}); err == nil {
		t.Error("Open with a file named new: got nil error")
	}
}

func TestHostnameEscaped(t *testing.T) {
	for _, tc := range []struct{ host, suffix string }{
		{"mx.example.org", ".mx.example.org"},
		{"a/b:c", `.a\057b\072c`},
	} {
		d := open(t, Options{NoSync: true, Hostname: tc.host})
		name, err := d.Deliver(t.Context(), nil, strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(name, tc.suffix) {
			t.Errorf("host %q: name %q, want suffix %q", tc.host, name, tc.suffix)
		}
	}
}

func TestDeliver(t *testing.T) {
	received := []byte("Received: from client.example (client.example [192.0.2.1])\r\n\tby mx.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n")
	big := bytes.Repeat([]byte("0123456789abcdef\r\n"), 3*bufSize/18+7) // several buffers, not a multiple of one
	tests := []struct {
		name   string
		header []byte
		body   func() io.Reader
		want   []byte
	}{
		{"empty", nil, func() io.Reader { return strings.NewReader("") }, nil},
		{"header only", received, func() io.Reader { return strings.NewReader("") }, received},
		{"body only", nil, func() io.Reader { return strings.NewReader("Subject: hi\r\n\r\nhello\r\n") }, []byte("Subject: hi\r\n\r\nhello\r\n")},
		{"header and body", received, func() io.Reader { return strings.NewReader("Subject: hi\r\n\r\nhello\r\n") }, append(append([]byte{}, received...), "Subject: hi\r\n\r\nhello\r\n"...)},
		{"multi-buffer body", received, func() io.Reader { return bytes.NewReader(big) }, append(append([]byte{}, received...), big...)},
		{"header larger than buffer", big, func() io.Reader { return strings.NewReader("tail") }, append(append([]byte{}, big...), "tail"...)},
		{"data with EOF", received, func() io.Reader { return iotest.DataErrReader(strings.NewReader("body")) }, append(append([]byte{}, received...), "body"...)},
		{"one byte reads", received, func() io.Reader { return iotest.OneByteReader(bytes.NewReader(big[:1000])) }, append(append([]byte{}, received...), big[:1000]...)},
	}
	for _, noSync := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/nosync=%v", tc.name, noSync), func(t *testing.T) {
				d := open(t, Options{NoSync: noSync})
				name, err := d.Deliver(t.Context(), tc.header, tc.body())
				if err != nil {
					t.Fatal(err)
				}
				assertDelivered(t, d, name, tc.want)
				if got := names(t, d, "new"); len(got) != 1 {
					t.Errorf("new/: %v, want one file", got)
				}
				wantSyncs := int64(1)
				if noSync {
					wantSyncs = 0
				}
				if got := d.dirSyncs.Load(); got != wantSyncs {
					t.Errorf("directory syncs: got %d, want %d", got, wantSyncs)
				}
			})
		}
	}
}

// failAfter returns n bytes of 'x' and then err.
type failAfter struct {
	n   int
	err error
}

func (r *failAfter) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = 'x'
	}
	r.n -= k
	return k, nil
}

// cancelAfter returns n bytes of 'x', then cancels its context and keeps returning data.
type cancelAfter struct {
	n      int
	cancel context.CancelFunc
}

func (r *cancelAfter) Read(p []byte) (int, error) {
	if r.n <= 0 {
		r.cancel()
	}
	for i := range p {
		p[i] = 'x'
	}
	r.n -= len(p)
	return len(p), nil
}

func TestDeliverFailureLeavesNothing(t *testing.T) {
	errBody := errors.New("connection reset")
	errDisk := errors.New("injected fsync failure")
	tests := []struct {
		name    string
		setup   func(d *Dir, ctx context.Context, cancel context.CancelFunc) io.Reader
		wantErr error
	}{
		{"body error at once", func(*Dir, context.Context, context.CancelFunc) io.Reader {
			return &failAfter{0, errBody}
		}, errBody},
		{"body error mid-way", func(*Dir, context.Context, context.CancelFunc) io.Reader {
			return &failAfter{3*bufSize + 100, errBody}
		}, errBody},
		{"unexpected EOF", func(*Dir, context.Context, context.CancelFunc) io.Reader {
			return &failAfter{100, io.ErrUnexpectedEOF}
		}, io.ErrUnexpectedEOF},
		{"context cancelled before", func(_ *Dir, _ context.Context, cancel context.CancelFunc) io.Reader {
			cancel()
			return strings.NewReader("hello")
		}, context.Canceled},
		{"context cancelled mid-way", func(_ *Dir, _ context.Context, cancel context.CancelFunc) io.Reader {
			return &cancelAfter{2 * bufSize, cancel}
		}, context.Canceled},
		{"directory fsync fails", func(d *Dir, _ context.Context, _ context.CancelFunc) io.Reader {
			d.commit.fsync = func() error { return errDisk }
			return strings.NewReader("hello")
		}, errDisk},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := open(t, Options{})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			body := tc.setup(d, ctx, cancel)
			name, err := d.Deliver(ctx, []byte("Received: x\r\n"), body)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if name != "" {
				t.Errorf("name = %q on error", name)
			}
			for _, sub := range []string{"tmp", "new", "cur"} {
				if left := names(t, d, sub); len(left) != 0 {
					t.Errorf("%s/ not empty: %v", sub, left)
				}
			}
		})
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	const n = 200
	d := open(t, Options{})
	content := func(i int) []byte {
		return bytes.Repeat(fmt.Appendf(nil, "message %d\r\n", i), i*37%500+1)
	}
	got := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			name, err := d.Deliver(t.Context(), fmt.Appendf(nil, "X-Seq: %d\r\n", i), bytes.NewReader(content(i)))
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = name
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, name := range got {
		if seen[name] {
			t.Fatalf("name %q delivered twice", name)
		}
		seen[name] = true
		assertDelivered(t, d, name, append(fmt.Appendf(nil, "X-Seq: %d\r\n", i), content(i)...))
	}
	if files := names(t, d, "new"); len(files) != n {
		t.Errorf("new/ holds %d files, want %d", len(files), n)
	}
	t.Logf("%d deliveries, %d directory fsyncs", n, d.dirSyncs.Load())
}

// TestGroupCommit blocks the first directory fsync until every other delivery has renamed its file and is
// waiting, so the outcome is deterministic: the blocked fsync began before their renames and cannot cover them,
// and exactly one more fsync covers all of them.
func TestGroupCommit(t *testing.T) {
	const n = 64
	d := open(t, Options{})
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	d.syncHook = func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}

	var wg sync.WaitGroup
	deliver := func(i int) {
		if _, err := d.Deliver(t.Context(), nil, strings.NewReader(fmt.Sprint(i))); err != nil {
			t.Error(err)
		}
	}
	wg.Go(func() { deliver(0) })
	<-entered
	for i := 1; i < n; i++ {
		wg.Go(func() { deliver(i) })
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		d.commit.mu.Lock()
		w := d.commit.waiting
		d.commit.mu.Unlock()
		if w == n-1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d deliveries reached the directory fsync", w, n-1)
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	wg.Wait()

	if got := d.dirSyncs.Load(); got != 2 {
		t.Errorf("%d deliveries took %d directory fsyncs, want 2", n, got)
	}
	if files := names(t, d, "new"); len(files) != n {
		t.Errorf("new/ holds %d files, want %d", len(files), n)
	}
}

// patternReader yields size bytes of a fixed pattern without holding them, hashing what it returns.
type patternReader struct {
	left int64
	off  int
	pat  []byte
	sum  io.Writer
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := 0
	for n < len(p) {
		k := copy(p[n:], r.pat[r.off:])
		n += k
		r.off = (r.off + k) % len(r.pat)
	}
	r.sum.Write(p)
	r.left -= int64(n)
	return n, nil
}

func TestLargeBodyStreams(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 100 MB")
	}
	const size = 100 << 20
	d := open(t, Options{})
	pat := make([]byte, 4093) // prime length, so misplaced buffers show up in the hash
	for i := range pat {
		pat[i] = byte(i*7 + i/251)
	}
	header := []byte("Received: by test\r\n")
	want := sha256.New()
	want.Write(header)
	body := &patternReader{left: size, pat: pat, sum: want}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	name, err := d.Deliver(t.Context(), header, body)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("delivering %d bytes allocated %d bytes, want < 8 MiB", size, alloc)
	} else {
		t.Logf("delivering %d bytes allocated %d bytes", size, alloc)
	}

	f, err := os.Open(filepath.Join(d.Path(), "new", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != int64(len(header))+size {
		t.Errorf("size %d, want %d", fi.Size(), int64(len(header))+size)
	}
	got := sha256.New()
	if _, err := io.Copy(got, f); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Error("content differs from what the reader produced")
	}
}

// BenchmarkDeliver measures one delivery end to end, including removing the file afterwards so that long runs
// do not fill the disk. The parallel cases run 16 goroutines per GOMAXPROCS, as an SMTP server has many sessions
// waiting on the disk at once; dirsyncs/op below 1 shows the group commit at work.
func BenchmarkDeliver(b *testing.B) {
	header := []byte("Received: from client.example by mx.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n")
	for _, mode := range []struct {
		name   string
		noSync bool
	}{{"fsync", false}, {"nosync", true}} {
		for _, size := range []int{1 << 10, 100 << 10} {
			body := bytes.Repeat([]byte("x"), size)
			deliver := func(b *testing.B, d *Dir, r *bytes.Reader) {
				r.Reset(body)
				name, err := d.Deliver(context.Background(), header, r)
				if err != nil {
					b.Error(err)
					return
				}
				os.Remove(filepath.Join(d.Path(), "new", name))
			}
			report := func(b *testing.B, d *Dir) {
				b.ReportMetric(float64(d.dirSyncs.Load())/float64(b.N), "dirsyncs/op")
			}
			prefix := fmt.Sprintf("%s/%dKiB", mode.name, size>>10)
			b.Run(prefix+"/serial", func(b *testing.B) {
				d := open(b, Options{NoSync: mode.noSync})
				b.SetBytes(int64(len(header) + size))
				b.ReportAllocs()
				r := bytes.NewReader(nil)
				for b.Loop() {
					deliver(b, d, r)
				}
				report(b, d)
			})
			b.Run(prefix+"/parallel", func(b *testing.B) {
				d := open(b, Options{NoSync: mode.noSync})
				b.SetBytes(int64(len(header) + size))
				b.ReportAllocs()
				b.SetParallelism(16)
				b.RunParallel(func(pb *testing.PB) {
					r := bytes.NewReader(nil)
					for pb.Next() {
						deliver(b, d, r)
					}
				})
				report(b, d)
			})
		}
	}
}

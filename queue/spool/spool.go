// Package spool is the embedded, on-disk Queue: an append-only log of
// segment files under one directory, needing no other service.
//
// Every message, and every change to its recipients' states, is a record
// appended to the newest segment. Sessions that finish at about the same
// time share one fdatasync of that segment (group commit), so durability
// costs one disk flush per batch, not one per message. A body streams in
// as chunk records, so no message is held whole in memory. On start, the
// segments are read in order to rebuild the queue exactly as it was when
// the last flush completed; a torn record at the tail is cut off. Oldest
// segments are deleted once nothing in them is live, and live messages
// stuck in an old segment are copied forward so it can go.
package spool

import (
	"context"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smtpkit/smtpkit/internal/durable"
	"github.com/smtpkit/smtpkit/queue"
)

// Record types.
const (
	recChunk  = 1 // part of a body: id, data
	recCommit = 2 // a message: id, JSON, last part of its body
	recState  = 3 // a new snapshot of a message's state: id, JSON
	recDelete = 4 // a message removed: id
)

const (
	headerLen = 12 // crc32c(4) type(1) pad(3) payload length(4)
	idLen     = 20
	chunkSize = 64 * 1024
	// DefaultSegmentSize is the size at which a new segment is started.
	DefaultSegmentSize = 64 << 20
	maxPayload         = chunkSize + 16<<20 // JSON of a huge envelope included
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Options configures a Spool.
type Options struct {
	// SegmentSize is the size at which a new segment file is started;
	// zero means 64 MiB.
	SegmentSize int64
	// NoSync skips fdatasync: for tests and benchmarks that say so. A
	// crash may then lose messages that were acknowledged.
	NoSync bool
	// Logger, nil means slog.Default().
	Logger *slog.Logger
}

type extent struct {
	seg int64
	off int64
	n   int64
}

type entry struct {
	msg     *queue.Message
	extents []extent
	segs    map[int64]struct{} // segments holding any record of it
}

type segment struct {
	num int64
	f   *os.File
	// written is how many bytes are appended. It changes under the
	// spool's mutex but is read atomically by the syncer: bytes below it
	// were written before it was raised, so a sync that starts after
	// reading it covers them.
	written atomic.Int64
	refs    int // live messages with a record here
}

// Spool is a queue.Queue on local disk.
type Spool struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu      sync.Mutex // guards everything below and appends
	segs    []*segment // oldest first; the last is the head
	index   map[string]*entry
	pending map[string][]extent // chunks of bodies being written (recovery)
	closed  bool

	lock   *os.File
	sync   syncer
	idSeq  atomic.Uint32
	idTime atomic.Int64
	bufs   sync.Pool
}

// Open opens (creating if needed) the spool in dir and recovers its state.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	s := &Spool{dir: dir, opts: opts, index: map[string]*entry{}, pending: map[string][]extent{}}
	s.log = opts.Logger
	if s.log == nil {
		s.log = slog.Default()
	}
	s.bufs.New = func() any { b := make([]byte, 0, headerLen+idLen+chunkSize+4096); return &b }
	s.sync.init(opts.NoSync)
	// The chain of directories must be durable before anything in them is:
	// a crash could otherwise lose the queue directory and every message.
	mk := durable.MkdirAll
	if opts.NoSync {
		mk = os.MkdirAll
	}
	if err := mk(dir, 0o700); err != nil {
		return nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if err := s.roll(); err != nil { // always append to a fresh segment
		s.closeFiles()
		return nil, err
	}
	s.gc()
	return s, nil
}

func segName(n int64) string { return fmt.Sprintf("%016d.seg", n) }

// newID returns a 20-character ID that sorts by time of creation.
func (s *Spool) newID() string {
	now := time.Now().UnixNano()
	for {
		last := s.idTime.Load()
		if now <= last {
			now = last + 1
		}
		if s.idTime.CompareAndSwap(last, now) {
			break
		}
	}
	var b [12]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now))
	binary.BigEndian.PutUint32(b[8:], s.idSeq.Add(1))
	return strings.ToLower(base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:idLen]
}

// appendRecord writes one record to the head segment and returns where the
// record's trailing data starts, and the segment and end offset a sync
// must cover.
func (s *Spool) appendRecord(typ byte, id string, meta, data []byte) (dataExt extent, end int64, err error) {
	bp := s.bufs.Get().(*[]byte)
	defer s.bufs.Put(bp)
	payloadLen := idLen + len(meta) + len(data)
	if typ == recCommit || typ == recState {
		payloadLen += 4
	}
	rec := (*bp)[:0]
	rec = append(rec, make([]byte, headerLen)...)
	rec = append(rec, id...)
	if typ == recCommit || typ == recState {
		rec = binary.LittleEndian.AppendUint32(rec, uint32(len(meta)))
	}
	rec = append(rec, meta...)
	dataStart := len(rec)
	rec = append(rec, data...)
	rec[4] = typ
	binary.LittleEndian.PutUint32(rec[8:12], uint32(payloadLen))
	binary.LittleEndian.PutUint32(rec[0:4], crc32.Checksum(rec[4:], castagnoli))
	*bp = rec

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return extent{}, 0, errors.New("spool: closed")
	}
	head := s.segs[len(s.segs)-1]
	if w := head.written.Load(); w > 0 && w+int64(len(rec)) > s.opts.SegmentSize {
		if err := s.roll(); err != nil {
			return extent{}, 0, err
		}
		head = s.segs[len(s.segs)-1]
	}
	if _, err := head.f.Write(rec); err != nil {
		// A partial write leaves a torn record; recovery cuts it off, and
		// nothing after it may be acknowledged: start a new segment.
		s.roll()
		return extent{}, 0, err
	}
	off := head.written.Load()
	head.written.Store(off + int64(len(rec)))
	return extent{seg: head.num, off: off + int64(dataStart), n: int64(len(data))}, off + int64(len(rec)), nil
}

// roll syncs the head (so waiters on it are covered) and starts a new one.
// Called with s.mu held, or during Open.
func (s *Spool) roll() error {
	var next int64 = 1
	if n := len(s.segs); n > 0 {
		head := s.segs[n-1]
		next = head.num + 1
		if err := s.sync.flushAll(head); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(filepath.Join(s.dir, segName(next)), os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if !s.opts.NoSync {
		if err := durable.SyncDir(s.dir); err != nil {
			f.Close()
			return err
		}
	}
	s.segs = append(s.segs, &segment{num: next, f: f})
	return nil
}

// Put implements queue.Queue.
func (s *Spool) Put(ctx context.Context, env *queue.Envelope, body io.Reader) (string, error) {
	m := &queue.Message{ID: s.newID(), Envelope: *env}
	m.Recipients = append([]queue.Recipient(nil), env.Recipients...)
	e, err := s.writeMessage(ctx, m, body)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.addEntry(e)
	s.mu.Unlock()
	return m.ID, nil
}

// writeMessage appends a message, its body as chunk records and then a
// commit record holding its state, and returns once that is durable. It
// sets m.Size. The entry it returns is not yet indexed.
func (s *Spool) writeMessage(ctx context.Context, m *queue.Message, body io.Reader) (*entry, error) {
	bp := s.bufs.Get().(*[]byte)
	buf := (*bp)[:chunkSize]
	defer s.bufs.Put(bp)
	e := &entry{msg: m, segs: map[int64]struct{}{}}
	m.Size = 0
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := io.ReadFull(body, buf)
		m.Size += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			buf = buf[:n]
			break
		}
		if err != nil {
			return nil, err
		}
		ext, _, err := s.appendRecord(recChunk, m.ID, nil, buf[:n])
		if err != nil {
			return nil, err
		}
		e.extents = append(e.extents, ext)
		e.segs[ext.seg] = struct{}{}
	}
	meta, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	// The last part of the body rides in the commit record itself, so a
	// small message is one write.
	ext, end, err := s.appendRecord(recCommit, m.ID, meta, buf)
	if err != nil {
		return nil, err
	}
	e.extents = append(e.extents, ext)
	e.segs[ext.seg] = struct{}{}
	if err := s.sync.wait(s.segByNum(ext.seg), end); err != nil {
		return nil, err
	}
	return e, nil
}

func (s *Spool) segByNum(n int64) *segment {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.segs) - 1; i >= 0; i-- {
		if s.segs[i].num == n {
			return s.segs[i]
		}
	}
	return nil
}

// addEntry indexes a message; s.mu held.
func (s *Spool) addEntry(e *entry) {
	if old, ok := s.index[e.msg.ID]; ok {
		s.unref(old)
	}
	s.index[e.msg.ID] = e
	for n := range e.segs {
		if sg := s.findSeg(n); sg != nil {
			sg.refs++
		}
	}
}

func (s *Spool) unref(e *entry) {
	for n := range e.segs {
		if sg := s.findSeg(n); sg != nil {
			sg.refs--
		}
	}
}

func (s *Spool) findSeg(n int64) *segment {
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].num >= n })
	if i < len(s.segs) && s.segs[i].num == n {
		return s.segs[i]
	}
	return nil
}

// Get implements queue.Queue.
func (s *Spool) Get(ctx context.Context, id string) (*queue.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.index[id]
	if !ok {
		return nil, queue.ErrNotFound
	}
	return e.msg.Clone(), nil
}

// Update implements queue.Queue.
func (s *Spool) Update(ctx context.Context, m *queue.Message) error {
	meta, err := json.Marshal(m)
	if err != nil {
		return err
	}
	s.mu.Lock()
	_, ok := s.index[m.ID]
	s.mu.Unlock()
	if !ok {
		return queue.ErrNotFound
	}
	ext, end, err := s.appendRecord(recState, m.ID, meta, nil)
	if err != nil {
		return err
	}
	if err := s.sync.wait(s.segByNum(ext.seg), end); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.index[m.ID]
	if !ok {
		return queue.ErrNotFound // deleted meanwhile
	}
	if m.Done() {
		s.unref(e)
		delete(s.index, m.ID)
		s.gcLocked()
		return nil
	}
	e.msg = m.Clone()
	if _, had := e.segs[ext.seg]; !had {
		e.segs[ext.seg] = struct{}{}
		if sg := s.findSeg(ext.seg); sg != nil {
			sg.refs++
		}
	}
	return nil
}

// Delete implements queue.Queue.
func (s *Spool) Delete(ctx context.Context, id string) error {
	s.mu.Lock()
	_, ok := s.index[id]
	s.mu.Unlock()
	if !ok {
		return queue.ErrNotFound
	}
	ext, end, err := s.appendRecord(recDelete, id, nil, nil)
	if err != nil {
		return err
	}
	if err := s.sync.wait(s.segByNum(ext.seg), end); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.index[id]; ok {
		s.unref(e)
		delete(s.index, id)
		s.gcLocked()
	}
	return nil
}

// Scan implements queue.Queue.
func (s *Spool) Scan(ctx context.Context, fn func(*queue.Message) bool) error {
	s.mu.Lock()
	msgs := make([]*queue.Message, 0, len(s.index))
	for _, e := range s.index {
		msgs = append(msgs, e.msg.Clone())
	}
	s.mu.Unlock()
	sort.Slice(msgs, func(i, j int) bool { return msgs[i].ID < msgs[j].ID })
	for _, m := range msgs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !fn(m) {
			return nil
		}
	}
	return nil
}

// Len returns the number of queued messages.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.index)
}

// Body implements queue.Queue.
func (s *Spool) Body(ctx context.Context, id string) (io.ReadCloser, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.index[id]
	if !ok {
		return nil, queue.ErrNotFound
	}
	// The segments are opened now, under the lock, not as the reader gets
	// to them: a compaction may copy the message forward and remove its old
	// segments while a delivery is still reading it, and an open file
	// stays readable after its name is gone.
	b := &bodyReader{exts: append([]extent(nil), e.extents...), files: map[int64]*os.File{}}
	for _, x := range b.exts {
		if _, ok := b.files[x.seg]; ok {
			continue
		}
		f, err := os.Open(filepath.Join(s.dir, segName(x.seg)))
		if err != nil {
			b.Close()
			return nil, err
		}
		b.files[x.seg] = f
	}
	return b, nil
}

type bodyReader struct {
	exts  []extent
	pos   int64 // within exts[0]
	files map[int64]*os.File
}

func (b *bodyReader) Read(p []byte) (int, error) {
	for len(b.exts) > 0 && b.pos >= b.exts[0].n {
		b.exts, b.pos = b.exts[1:], 0
	}
	if len(b.exts) == 0 {
		return 0, io.EOF
	}
	e := b.exts[0]
	f := b.files[e.seg]
	if int64(len(p)) > e.n-b.pos {
		p = p[:e.n-b.pos]
	}
	n, err := f.ReadAt(p, e.off+b.pos)
	b.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *bodyReader) Close() error {
	for _, f := range b.files {
		f.Close()
	}
	return nil
}

// Close flushes and closes the spool.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if n := len(s.segs); n > 0 {
		err = s.sync.flushAll(s.segs[n-1])
	}
	s.closeFiles()
	return err
}

func (s *Spool) closeFiles() {
	for _, sg := range s.segs {
		if sg.f != nil {
			sg.f.Close()
		}
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
		s.lock = nil
	}
}

// gc removes the oldest segments that hold nothing live. Only a prefix is
// ever removed: a later segment may hold the delete or final state of a
// message committed in an earlier one, and losing it would bring that
// message back to life on the next start.
func (s *Spool) gc() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gcLocked()
}

func (s *Spool) gcLocked() {
	for len(s.segs) > 1 && s.segs[0].refs <= 0 {
		sg := s.segs[0]
		sg.f.Close()
		if err := os.Remove(filepath.Join(s.dir, segName(sg.num))); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("spool: removing segment", "segment", sg.num, "err", err)
			return
		}
		s.sync.forget(sg)
		s.segs = s.segs[1:]
	}
}

// Compact copies the live messages of the oldest segment forward when
// more than keep segments exist, so that old segments do not pile up
// behind a message that waits days for its next attempt.
func (s *Spool) Compact(ctx context.Context, keep int) error {
	s.mu.Lock()
	if len(s.segs) <= keep || len(s.segs) < 2 {
		s.mu.Unlock()
		return nil
	}
	oldest := s.segs[0].num
	var ids []string
	for id, e := range s.index {
		if _, ok := e.segs[oldest]; ok {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	for _, id := range ids {
		if err := s.rewrite(ctx, id); err != nil && !errors.Is(err, queue.ErrNotFound) {
			return err
		}
	}
	s.gc()
	return nil
}

// rewrite appends a message's body and current state anew at the head.
func (s *Spool) rewrite(ctx context.Context, id string) error {
	m, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	rc, err := s.Body(ctx, id)
	if err != nil {
		return err
	}
	defer rc.Close()
	e, err := s.writeMessage(ctx, m, rc)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.index[id]
	if !ok {
		return nil // delivered or deleted meanwhile; its records are dead
	}
	// Keep the newest state: an Update may have landed during the copy,
	// in a segment at least as new as the copy's commit; it stays
	// referenced.
	commitSeg := e.extents[len(e.extents)-1].seg
	for n := range cur.segs {
		if n >= commitSeg {
			e.segs[n] = struct{}{}
		}
	}
	e.msg = cur.msg
	s.addEntry(e)
	return nil
}

// recover rebuilds the index from the segments.
func (s *Spool) recover() error {
	names, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	var nums []int64
	for _, d := range names {
		name := d.Name()
		if !strings.HasSuffix(name, ".seg") {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(name, ".seg"), 10, 64)
		if err != nil {
			continue
		}
		nums = append(nums, n)
	}
	sort.Slice(nums, func(i, j int) bool { return nums[i] < nums[j] })
	for i, n := range nums {
		last := i == len(nums)-1
		if err := s.replay(n, last); err != nil {
			return fmt.Errorf("spool: segment %d: %w", n, err)
		}
	}
	s.pending = nil
	for _, e := range s.index {
		for n := range e.segs {
			if sg := s.findSeg(n); sg != nil {
				sg.refs++
			}
		}
	}
	return nil
}

func (s *Spool) replay(num int64, last bool) error {
	path := filepath.Join(s.dir, segName(num))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	sg := &segment{num: num, f: f}
	s.segs = append(s.segs, sg)
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	r := io.NewSectionReader(f, 0, size)
	hdr := make([]byte, headerLen)
	payload := make([]byte, 0, chunkSize+idLen+4096)
	var off int64
	for off < size {
		if _, err := r.ReadAt(hdr, off); err != nil {
			break
		}
		plen := int64(binary.LittleEndian.Uint32(hdr[8:12]))
		if plen < idLen || plen > maxPayload || off+headerLen+plen > size {
			break
		}
		if cap(payload) < int(plen) {
			payload = make([]byte, plen)
		}
		payload = payload[:plen]
		if _, err := r.ReadAt(payload, off+headerLen); err != nil {
			break
		}
		crc := crc32.Update(crc32.Checksum(hdr[4:], castagnoli), castagnoli, payload)
		if crc != binary.LittleEndian.Uint32(hdr[0:4]) {
			break
		}
		s.apply(num, off, hdr[4], payload)
		off += headerLen + plen
	}
	if off < size {
		if !last {
			// Only the head can have a torn tail; damage elsewhere is a
			// disk problem: keep what was read, keep the file, say so.
			s.log.Error("spool: damaged record, rest of segment ignored", "segment", num, "offset", off)
		} else if err := f.Truncate(off); err != nil {
			return err
		}
	}
	sg.written.Store(off)
	return nil
}

func (s *Spool) apply(seg, off int64, typ byte, p []byte) {
	id := string(p[:idLen])
	p = p[idLen:]
	dataOff := off + headerLen + idLen
	switch typ {
	case recChunk:
		s.pending[id] = append(s.pending[id], extent{seg: seg, off: dataOff, n: int64(len(p))})
	case recCommit, recState:
		if len(p) < 4 {
			return
		}
		ml := int(binary.LittleEndian.Uint32(p[:4]))
		if ml > len(p)-4 {
			return
		}
		var m queue.Message
		if err := json.Unmarshal(p[4:4+ml], &m); err != nil {
			s.log.Error("spool: bad record", "segment", seg, "offset", off, "err", err)
			return
		}
		m.ID = id
		if typ == recCommit {
			exts := append(s.pending[id], extent{seg: seg, off: dataOff + 4 + int64(ml), n: int64(len(p) - 4 - ml)})
			delete(s.pending, id)
			segs := map[int64]struct{}{}
			for _, e := range exts {
				segs[e.seg] = struct{}{}
			}
			if old, ok := s.index[id]; ok { // copied forward: the newest state wins
				for n := range old.segs {
					segs[n] = struct{}{}
				}
				s.index[id] = &entry{msg: old.msg, extents: exts, segs: segs}
				return
			}
			s.index[id] = &entry{msg: &m, extents: exts, segs: segs}
			return
		}
		e, ok := s.index[id]
		if !ok {
			return
		}
		if m.Done() {
			delete(s.index, id)
			return
		}
		e.msg = &m
		e.segs[seg] = struct{}{}
	case recDelete:
		delete(s.index, id)
		delete(s.pending, id)
	}
}

// syncer shares fdatasyncs between concurrent writers (group commit).
type syncer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	busy   bool
	noSync bool
	synced map[*segment]int64
	count  atomic.Int64 // fdatasyncs done, for tests and benchmarks
}

func (y *syncer) init(noSync bool) {
	y.cond = sync.NewCond(&y.mu)
	y.noSync = noSync
	y.synced = map[*segment]int64{}
}

// wait returns once sg is durable up to end. A caller that finds no sync
// running starts one covering everything written so far; others wait for
// it, and if it started before their write, for the next.
func (y *syncer) wait(sg *segment, end int64) error {
	if y.noSync || sg == nil {
		return nil
	}
	y.mu.Lock()
	defer y.mu.Unlock()
	for {
		if y.synced[sg] >= end {
			return nil
		}
		if y.busy {
			y.cond.Wait()
			continue
		}
		y.busy = true
		target := sg.written.Load()
		y.mu.Unlock()
		err := fdatasync(sg.f)
		y.count.Add(1)
		y.mu.Lock()
		y.busy = false
		if err == nil && target > y.synced[sg] {
			y.synced[sg] = target
		}
		y.cond.Broadcast()
		if err != nil {
			return err
		}
	}
}

// flushAll syncs a segment completely (at roll and close; s.mu held, so
// no write is in progress).
func (y *syncer) flushAll(sg *segment) error {
	if y.noSync {
		return nil
	}
	y.mu.Lock()
	for y.busy {
		y.cond.Wait()
	}
	y.busy = true
	target := sg.written.Load()
	y.mu.Unlock()
	err := fdatasync(sg.f)
	y.mu.Lock()
	y.busy = false
	if err == nil {
		y.synced[sg] = target
	}
	y.cond.Broadcast()
	y.mu.Unlock()
	return err
}

func (y *syncer) forget(sg *segment) {
	y.mu.Lock()
	delete(y.synced, sg)
	y.mu.Unlock()
}

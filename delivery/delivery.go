// Package delivery takes messages out of the queue and delivers them:
// it schedules attempts per recipient domain with bounded concurrency,
// retries temporary failures with exponential backoff and jitter, and
// turns permanent failures and expiry into bounces to the sender.
//
// Where a message goes is a Transport's business: MX delivery, a
// smarthost, or anything else that implements it.
package delivery

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/smtpkit/smtpkit/delivery/dsn"
	"github.com/smtpkit/smtpkit/queue"
	"github.com/smtpkit/smtpkit/smtp"
)

// Result is the outcome of an attempt for one recipient.
type Result struct {
	// Err is nil when the recipient was accepted; an *smtp.Error from the
	// remote server or from local policy; any other error is temporary.
	Err error
	// RemoteMTA names the host that answered, if any.
	RemoteMTA string
}

// Transport delivers one message to some of its recipients, all in one
// domain, in one transaction where it can.
type Transport interface {
	// Deliver returns one Result per index in rcpts (indexes into
	// m.Recipients). body opens the message body; it may be called more
	// than once (say, once per MX host tried).
	Deliver(ctx context.Context, m *queue.Message, domain string, rcpts []int, body func() (io.ReadCloser, error)) []Result
}

// Defaults for Scheduler's zero fields.
const (
	DefaultMinBackoff        = 5 * time.Minute
	DefaultMaxBackoff        = 4 * time.Hour
	DefaultLifetime          = 5 * 24 * time.Hour
	DefaultConcurrency       = 100
	DefaultDomainConcurrency = 20
)

// Scheduler runs deliveries out of a queue.
type Scheduler struct {
	Queue     queue.Queue
	Transport Transport
	// Hostname is the reporting MTA in bounces.
	Hostname string
	// MinBackoff and MaxBackoff bound the wait between attempts, which
	// doubles each time (with jitter); zero means 5 minutes and 4 hours.
	MinBackoff, MaxBackoff time.Duration
	// Lifetime is how long a message is retried before it bounces; zero
	// means 5 days.
	Lifetime time.Duration
	// DelayWarning, if set, sends the sender a "delayed" notice once a
	// message has waited this long (4 hours is usual); zero means never.
	DelayWarning time.Duration
	// Concurrency and DomainConcurrency cap deliveries in flight in all
	// and per destination domain; zero means 100 and 20.
	Concurrency, DomainConcurrency int
	// Logger, nil means slog.Default().
	Logger *slog.Logger
	// Now, if set, is the clock (tests).
	Now func() time.Time

	mu       sync.Mutex
	due      map[string]time.Time // message ID → next due time
	queue    dueHeap              // the same, ordered by time; stale entries are skipped
	inflight map[string]bool
	domains  map[string]*domainSlots
	parked   map[string]string // message ID → the domain at its limit it waits for
	granted  map[string]string // message ID → the domain whose slot was handed to it
	wake     chan struct{}
	slots    chan struct{}
	wg       sync.WaitGroup
	started  bool
}

func (s *Scheduler) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Scheduler) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func or[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}

func (s *Scheduler) init() {
	if s.started {
		return
	}
	s.started = true
	s.due = map[string]time.Time{}
	s.inflight = map[string]bool{}
	s.domains = map[string]*domainSlots{}
	s.parked = map[string]string{}
	s.granted = map[string]string{}
	s.wake = make(chan struct{}, 1)
	s.slots = make(chan struct{}, or(s.Concurrency, DefaultConcurrency))
}

// Notify schedules a message (new, or to be retried now).
func (s *Scheduler) Notify(id string) {
	s.mu.Lock()
	s.init()
	if _, ok := s.parked[id]; !ok { // a parked message is already in line for its domain
		s.setDue(id, time.Time{})
	}
	s.mu.Unlock()
	s.kick()
}

// RetryAll makes every queued message due now.
func (s *Scheduler) RetryAll() {
	s.mu.Lock()
	s.init()
	s.queue = s.queue[:0]
	for id := range s.due {
		s.setDue(id, time.Time{})
	}
	s.mu.Unlock()
	s.kick()
}

func (s *Scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run schedules deliveries until ctx is done, then waits for deliveries in
// flight to end (their contexts are cancelled).
func (s *Scheduler) Run(ctx context.Context) error {
	s.mu.Lock()
	s.init()
	s.mu.Unlock()
	// Pick up what the queue holds: after a restart, this is the recovery.
	err := s.Queue.Scan(ctx, func(m *queue.Message) bool {
		s.mu.Lock()
		s.setDue(m.ID, earliest(m))
		s.mu.Unlock()
		return true
	})
	if err != nil {
		return err
	}
	defer s.wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		next := s.dispatch(ctx)
		wait := time.Until(next)
		if next.IsZero() {
			wait = time.Hour
		}
		if wait < 0 {
			wait = 0
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// earliest returns when a message is next due: its earliest pending recipient.
func earliest(m *queue.Message) time.Time {
	var t time.Time
	first := true
	for _, r := range m.Recipients {
		if r.Status != queue.Pending {
			continue
		}
		if first || r.NextAttempt.Before(t) {
			t, first = r.NextAttempt, false
		}
	}
	return t
}

// dispatch starts every due message it has room for and returns when the
// next one is due.
func (s *Scheduler) dispatch(ctx context.Context) time.Time {
	now := s.now()
	s.mu.Lock()
	free := cap(s.slots) - len(s.slots)
	if free <= 0 {
		s.mu.Unlock()
		return time.Time{} // a delivery in flight kicks when it ends
	}
	// The earliest entries of the heap, not a scan of every queued
	// message: with a large deferred backlog each wake-up (every new
	// message, every delivery's end) would otherwise cost O(queue).
	var ready []string
	var next time.Time
	for len(s.queue) > 0 {
		e := s.queue[0]
		if t, ok := s.due[e.id]; !ok || !t.Equal(e.t) || s.inflight[e.id] {
			// Stale: the message is gone, due at another time (a newer
			// entry stands for it), or being tried (its attempt sets
			// its next time when it ends).
			heap.Pop(&s.queue)
			continue
		}
		if e.t.After(now) {
			next = e.t
			break
		}
		if len(ready) == free {
			break // no room: a delivery in flight kicks when it ends
		}
		heap.Pop(&s.queue)
		// In flight from here, which also makes a second entry for it
		// (pushed by Notify and by the start-up scan) stale.
		s.inflight[e.id] = true
		ready = append(ready, e.id)
	}
	s.compact()
	s.mu.Unlock()
	for i, id := range ready {
		select {
		case s.slots <- struct{}{}:
		default:
			// Full (cannot happen while dispatch is the only taker):
			// put the rest back and come back when a delivery ends.
			s.mu.Lock()
			for _, id := range ready[i:] {
				delete(s.inflight, id)
				if t, ok := s.due[id]; ok {
					heap.Push(&s.queue, dueEntry{t, id})
				}
			}
			s.mu.Unlock()
			return time.Time{}
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.attempt(ctx, id)
			<-s.slots
			s.mu.Lock()
			delete(s.inflight, id)
			s.mu.Unlock()
			s.kick()
		}()
	}
	return next
}

// attempt delivers the due recipients of one message, a domain at a time
// in parallel, and records the results.
func (s *Scheduler) attempt(ctx context.Context, id string) {
	m, err := s.Queue.Get(ctx, id)
	if err != nil {
		s.mu.Lock()
		delete(s.due, id)
		s.mu.Unlock()
		s.dropGrant(id)
		return
	}
	now := s.now()
	byDomain := map[string][]int{}
	for i, r := range m.Recipients {
		if r.Status == queue.Pending && !r.NextAttempt.After(now) {
			d := strings.ToLower(r.Address.Domain)
			byDomain[d] = append(byDomain[d], i)
		}
	}
	body := func() (io.ReadCloser, error) { return s.Queue.Body(ctx, id) }
	var mu sync.Mutex
	var wg sync.WaitGroup
	var blocked []string
	for domain, idx := range byDomain {
		if !s.takeDomain(id, domain) {
			// The domain is at its limit. Waiting for it here would hold
			// a delivery slot, and a backlog to one domain would take
			// every slot from the others; instead the message waits in
			// the domain's line, in memory, and the next delivery to the
			// domain that ends hands it its slot.
			blocked = append(blocked, domain)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.releaseDomain(domain)
			res := s.Transport.Deliver(ctx, m, domain, idx, body)
			mu.Lock()
			defer mu.Unlock()
			for k, i := range idx {
				var r Result
				if k < len(res) {
					r = res[k]
				} else {
					r.Err = errors.New("transport returned no result")
				}
				s.record(m, i, r, now)
			}
		}()
	}
	wg.Wait()
	// A slot handed over for recipients no longer due (bounced or deleted
	// meanwhile) goes to the next in line.
	s.dropGrant(id)
	if ctx.Err() != nil {
		return // shutting down: what was recorded in memory is retried
	}
	if len(blocked) == 0 || len(blocked) < len(byDomain) {
		s.finish(ctx, m, now) // when every domain was blocked, nothing was tried
	}
	if len(blocked) > 0 {
		s.park(id, blocked[0])
	}
}

// setDue makes message id due at t.
func (s *Scheduler) setDue(id string, t time.Time) {
	s.due[id] = t
	heap.Push(&s.queue, dueEntry{t, id})
}

// compact rebuilds the heap when stale entries outnumber live ones, so that
// it stays within twice the queue's size.
func (s *Scheduler) compact() {
	if len(s.queue) <= 2*len(s.due)+64 {
		return
	}
	s.queue = s.queue[:0]
	for id, t := range s.due {
		s.queue = append(s.queue, dueEntry{t, id})
	}
	heap.Init(&s.queue)
}

// dueEntry is a message's next due time, for the heap.
type dueEntry struct {
	t  time.Time
	id string
}

type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].t.Before(h[j].t) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// takeDomain takes a delivery slot of domain d for message id, or the slot
// already handed to it; false means the domain is at its limit.
func (s *Scheduler) takeDomain(id, d string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.granted[id] == d {
		delete(s.granted, id) // counted as busy since it was handed over
		return true
	}
	ds, ok := s.domains[d]
	if !ok {
		ds = &domainSlots{}
		s.domains[d] = ds
	}
	if ds.busy >= or(s.DomainConcurrency, DefaultDomainConcurrency) {
		return false
	}
	ds.busy++
	return true
}

// releaseDomain ends a delivery to d: its slot goes to the first message in
// d's line, which is made due now, or back to the domain.
func (s *Scheduler) releaseDomain(d string) {
	s.mu.Lock()
	handed := s.releaseDomainLocked(d)
	s.mu.Unlock()
	if handed {
		s.kick()
	}
}

func (s *Scheduler) releaseDomainLocked(d string) (handed bool) {
	ds := s.domains[d]
	for len(ds.line) > 0 {
		id := ds.line[0]
		ds.line = ds.line[1:]
		if s.parked[id] != d {
			continue // gone from the line meanwhile
		}
		delete(s.parked, id)
		s.granted[id] = d
		s.setDue(id, time.Time{})
		return true
	}
	if ds.busy--; ds.busy <= 0 {
		delete(s.domains, d) // the map does not grow with every domain ever seen
	}
	return false
}

// dropGrant gives back a slot handed to message id and not used, if any.
func (s *Scheduler) dropGrant(id string) {
	s.mu.Lock()
	d, ok := s.granted[id]
	handed := false
	if ok {
		delete(s.granted, id)
		handed = s.releaseDomainLocked(d)
	}
	s.mu.Unlock()
	if handed {
		s.kick()
	}
}

// park puts message id in the line for domain d, unless a slot came free
// since it was refused one, or the message is gone.
func (s *Scheduler) park(id, d string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.due[id]; !ok {
		return // done, or deleted meanwhile
	}
	ds := s.domains[d]
	if ds == nil || ds.busy < or(s.DomainConcurrency, DefaultDomainConcurrency) {
		s.setDue(id, time.Time{})
		return
	}
	delete(s.due, id)
	s.parked[id] = d
	ds.line = append(ds.line, id)
}

// domainSlots counts a domain's deliveries in flight, and slots handed to
// messages not yet running, and holds the line of messages waiting for one.
type domainSlots struct {
	busy int
	line []string
}

// record applies one attempt's result to a recipient.
func (s *Scheduler) record(m *queue.Message, i int, r Result, now time.Time) {
	rc := &m.Recipients[i]
	rc.Attempts++
	rc.RemoteMTA = r.RemoteMTA
	if r.Err == nil {
		rc.Status = queue.Delivered
		rc.LastReply = "250 delivered"
		s.log().Info("delivered", "id", m.ID, "rcpt", rc.Address.String(), "mta", r.RemoteMTA, "attempt", rc.Attempts)
		return
	}
	e := smtp.ErrorOf(r.Err)
	rc.LastReply = replyText(e)
	if e.Permanent() {
		rc.Status = queue.Failed
		s.log().Warn("bounced", "id", m.ID, "rcpt", rc.Address.String(), "mta", r.RemoteMTA, "reply", rc.LastReply)
		return
	}
	if now.Sub(m.Received) >= or(s.Lifetime, DefaultLifetime) {
		rc.Status = queue.Failed
		rc.LastReply = "Message expired after " + or(s.Lifetime, DefaultLifetime).String() + " in queue; last error: " + rc.LastReply
		s.log().Warn("expired", "id", m.ID, "rcpt", rc.Address.String(), "reply", rc.LastReply)
		return
	}
	rc.NextAttempt = now.Add(s.backoff(rc.Attempts))
	s.log().Info("deferred", "id", m.ID, "rcpt", rc.Address.String(), "mta", r.RemoteMTA, "reply", rc.LastReply, "next", rc.NextAttempt.Format(time.RFC3339))
}

func replyText(e *smtp.Error) string {
	s := e.Error()
	if len(s) > 500 {
		s = s[:500]
	}
	return s
}

// backoff doubles from MinBackoff up to MaxBackoff, with jitter of up to a
// fifth either way so that retries of a burst spread out.
func (s *Scheduler) backoff(attempts int) time.Duration {
	minB, maxB := or(s.MinBackoff, DefaultMinBackoff), or(s.MaxBackoff, DefaultMaxBackoff)
	d := minB
	for i := 1; i < attempts && d < maxB; i++ {
		d *= 2
	}
	d = min(d, maxB)
	j := time.Duration(rand.Int64N(int64(d)/5 + 1))
	if rand.IntN(2) == 0 {
		return d - j
	}
	return min(d+j, maxB+maxB/5)
}

// finish sends the notifications a message's new state calls for, then
// records the state. A bounce is queued before the state that makes it
// due is recorded: after a crash between the two, a bounce may be sent
// twice, but never not at all.
func (s *Scheduler) finish(ctx context.Context, m *queue.Message, now time.Time) {
	var failed []int
	for i, r := range m.Recipients {
		if r.Status == queue.Failed && !r.Notified {
			failed = append(failed, i)
		}
	}
	retryNotify := false
	if len(failed) > 0 {
		if err := s.notify(ctx, m, failed, dsn.Failed, now); err != nil {
			// Keep them unnotified: the message stays queued and the
			// bounce is tried again, rather than lost.
			s.log().Error("queueing bounce", "id", m.ID, "err", err)
			retryNotify = true
		} else {
			for _, i := range failed {
				m.Recipients[i].Notified = true
			}
		}
	}
	if dw := s.DelayWarning; dw > 0 && !m.DelayNotified && now.Sub(m.Received) >= dw {
		var delayed []int
		for i, r := range m.Recipients {
			if r.Status == queue.Pending {
				delayed = append(delayed, i)
			}
		}
		if len(delayed) > 0 {
			if err := s.notify(ctx, m, delayed, dsn.Delayed, now); err != nil {
				s.log().Error("queueing delay notice", "id", m.ID, "err", err)
			} else {
				m.DelayNotified = true
			}
		}
	}
	if err := s.Queue.Update(ctx, m); err != nil && !errors.Is(err, queue.ErrNotFound) {
		s.log().Error("queue update", "id", m.ID, "err", err)
	}
	s.mu.Lock()
	switch {
	case m.Done():
		delete(s.due, m.ID)
	case retryNotify:
		s.setDue(m.ID, now.Add(or(s.MinBackoff, DefaultMinBackoff)))
	default:
		s.setDue(m.ID, earliest(m))
	}
	s.mu.Unlock()
}

// notify queues a DSN to the sender for the given recipients, honouring
// their NOTIFY parameters (RFC 3461). Mail from the null sender is never
// answered: that is how bounce loops are avoided (RFC 5321 6.1).
func (s *Scheduler) notify(ctx context.Context, m *queue.Message, idx []int, action dsn.Action, now time.Time) error {
	if m.From.IsNull() {
		if action == dsn.Failed {
			s.log().Warn("bounce of a bounce dropped", "id", m.ID)
		}
		return nil
	}
	rep := &dsn.Report{
		ReportingMTA: s.Hostname,
		To:           m.From,
		EnvelopeID:   m.MailOptions.EnvelopeID,
		ArrivalDate:  m.Received,
		HeadersOnly:  m.MailOptions.Return == smtp.ReturnHeaders,
		UTF8:         m.MailOptions.UTF8,
		Date:         now,
	}
	for _, i := range idx {
		r := m.Recipients[i]
		if !dsn.Wanted(r.Options.Notify, action) {
			continue
		}
		status := smtp.EnhancedCode{5, 0, 0}
		if action == dsn.Delayed {
			status = smtp.EnhancedCode{4, 0, 0}
		}
		if ec := parseEnhanced(r.LastReply); ec != (smtp.EnhancedCode{}) {
			status = ec
		}
		if strings.Contains(r.LastReply, "Message expired") {
			status = smtp.EnhancedCode{5, 4, 7}
		}
		rr := dsn.Recipient{
			Final: r.Address, OriginalRecipientType: r.Options.OriginalRecipientType, OriginalRecipient: r.Options.OriginalRecipient,
			Action: action, Status: status, RemoteMTA: r.RemoteMTA, Diagnostic: r.LastReply, LastAttempt: now,
		}
		if action == dsn.Delayed {
			rr.WillRetryUntil = m.Received.Add(or(s.Lifetime, DefaultLifetime))
		}
		rep.Recipients = append(rep.Recipients, rr)
	}
	if len(rep.Recipients) == 0 {
		return nil
	}
	var buf bytes.Buffer
	var orig io.Reader
	if rc, err := s.Queue.Body(ctx, m.ID); err == nil {
		defer rc.Close()
		orig = rc
	}
	if err := dsn.Write(&buf, rep, orig); err != nil {
		return err
	}
	env := &queue.Envelope{
		// The report's text part is 8-bit UTF-8, and so may the original be.
		MailOptions: smtp.MailOptions{UTF8: m.MailOptions.UTF8, Body: smtp.Body8BitMIME},
		Recipients:  []queue.Recipient{{Address: m.From, Options: smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.NotifyNever}}}},
		Received:    now,
		Client:      "local DSN for " + m.ID,
	}
	id, err := s.Queue.Put(ctx, env, &buf)
	if err != nil {
		return err
	}
	s.log().Info("dsn queued", "id", m.ID, "dsn", id, "action", string(action), "to", m.From.String())
	s.Notify(id)
	return nil
}

// parseEnhanced finds the enhanced code in a stored reply such as
// "550 5.1.1 No such user".
func parseEnhanced(reply string) smtp.EnhancedCode {
	_, rest, _ := strings.Cut(reply, " ")
	ec, _, _ := smtp.ParseEnhancedCode(rest)
	return ec
}

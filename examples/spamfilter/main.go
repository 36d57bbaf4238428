// Spamfilter refuses spam at the end of DATA, while the client is still
// connected, so that the sender gets the bounce and no backscatter is ever
// sent. It shows a full Session whose Data streams the body: each line is
// scored as it arrives (spammy words, a missing Message-ID, an upstream
// X-Spam-Flag), the body is spooled to a temporary file at the same time,
// and reading stops as soon as the score reaches the threshold; the
// message is then refused with smtp.Reject (550 5.7.1). Memory use is the
// same for a 1 KB and a 100 MB message.
//
// Ham goes on to the next step with its body read back from the spool;
// here that step prints a summary (see examples/savefiles for delivery).
//
// Try it:
//
//	go run ./examples/spamfilter -listen 127.0.0.1:2525 -threshold 5
//	swaks --server 127.0.0.1:2525 --from a@example.org --to b@example.com \
//	    --header "Subject: WINNER lottery" --body "click here for free money"
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"strings"

	"github.com/smtpkit/smtpkit/server"
	"github.com/smtpkit/smtpkit/smtp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:2525", "address to accept mail on")
	threshold := flag.Int("threshold", 5, "score at which a message is refused")
	flag.Parse()
	f := &Filter{
		Threshold: *threshold,
		Words:     defaultWords(),
		Next:      printer(os.Stdout),
	}
	srv := &server.Server{Addr: *listen, Handler: f}
	log.Fatal(srv.ListenAndServe())
}

// defaultWords are the words the filter counts, in lower case.
func defaultWords() []string {
	return []string{"viagra", "lottery", "winner", "bitcoin", "free money", "click here", "act now"}
}

// Filter is a Handler whose sessions score each message as it streams in
// and refuse spam. It is safe for concurrent use: every session has its
// own state.
type Filter struct {
	// Threshold is the score at which a message is spam.
	Threshold int
	// Words are counted case-insensitively: once per occurrence in the
	// body, twice in the Subject.
	Words []string
	// Next gets each accepted message, its Data read from the spool.
	Next server.EnvelopeFunc
	// SpoolDir holds the spool files; "" means os.TempDir().
	SpoolDir string
	// Logger gets one line per verdict; nil means slog.Default().
	Logger *slog.Logger
}

// NewSession implements server.Handler.
func (f *Filter) NewSession(ctx context.Context, c *server.Conn) (server.Session, error) {
	return &session{f: f, env: server.Envelope{Conn: c}}, nil
}

func (f *Filter) logger() *slog.Logger {
	if f.Logger != nil {
		return f.Logger
	}
	return slog.Default()
}

// session keeps the envelope of the transaction in progress.
type session struct {
	f   *Filter
	env server.Envelope
}

func (s *session) Mail(_ context.Context, from smtp.Address, opts *smtp.MailOptions) error {
	s.env.From, s.env.MailOptions = from, *opts
	return nil
}

func (s *session) Rcpt(_ context.Context, to smtp.Address, opts *smtp.RcptOptions) error {
	s.env.To = append(s.env.To, server.Recipient{Address: to, Options: *opts})
	return nil
}

func (s *session) Data(ctx context.Context, r io.Reader) error {
	spool, err := os.CreateTemp(s.f.SpoolDir, "spamfilter-*")
	if err != nil {
		return err // untyped: 451, try again later
	}
	defer os.Remove(spool.Name())
	defer spool.Close()

	sc := newScorer(s.f.Words, s.f.Threshold)
	// The scorer comes first: once it says spam, the copy stops, nothing
	// more is spooled, and the server throws the rest of the body away.
	_, err = io.Copy(io.MultiWriter(sc, spool), r)
	if err != nil && !errors.Is(err, errSpam) {
		return err // a limit or the connection broke; the server replies
	}
	sc.finish()
	log := s.f.logger().With("id", s.env.Conn.ID, "from", s.env.From.String(), "score", sc.score, "reasons", sc.reasons)
	if sc.spam() {
		log.Info("spam refused")
		return smtp.Reject("Message refused as spam")
	}
	log.Info("ham accepted")
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return err
	}
	env := s.env
	env.Data = spool
	return s.f.Next(ctx, &env)
}

func (s *session) Reset(context.Context) {
	s.env = server.Envelope{Conn: s.env.Conn}
}

func (s *session) Close(context.Context, error) {}

// errSpam stops the copy once the verdict is known.
var errSpam = errors.New("spam threshold reached")

// maxScoredLine bounds the bytes of one line the scorer holds; a longer
// line is scored in pieces (a word cut in two is then missed).
const maxScoredLine = 4096

// scorer is an io.Writer that scores a message line by line as it is
// written, holding at most one line.
type scorer struct {
	words     []string
	threshold int
	score     int
	reasons   []string
	line      []byte
	inBody    bool
	messageID bool
}

func newScorer(words []string, threshold int) *scorer {
	return &scorer{words: words, threshold: threshold}
}

func (s *scorer) spam() bool { return s.score >= s.threshold }

func (s *scorer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			take := min(len(p), maxScoredLine-len(s.line))
			s.line = append(s.line, p[:take]...)
			p = p[take:]
			if len(s.line) == maxScoredLine {
				s.scoreLine(string(s.line))
				s.line = s.line[:0]
			}
		} else {
			s.line = append(s.line, p[:i]...)
			s.scoreLine(strings.TrimSuffix(string(s.line), "\r"))
			s.line = s.line[:0]
			p = p[i+1:]
		}
		if s.spam() {
			return n - len(p), errSpam
		}
	}
	return n, nil
}

// finish scores what is left once the whole body is in.
func (s *scorer) finish() {
	if len(s.line) > 0 {
		s.scoreLine(string(s.line))
		s.line = nil
	}
	if !s.inBody {
		s.endOfHeaders()
	}
}

func (s *scorer) add(points int, reason string) {
	s.score += points
	s.reasons = append(s.reasons, reason)
}

func (s *scorer) endOfHeaders() {
	s.inBody = true
	if !s.messageID {
		s.add(1, "no Message-ID")
	}
}

func (s *scorer) scoreLine(line string) {
	lower := strings.ToLower(line)
	if s.inBody {
		s.countWords(lower, 1)
		return
	}
	switch {
	case line == "":
		s.endOfHeaders()
	case strings.HasPrefix(lower, "message-id:"):
		s.messageID = true
	case strings.HasPrefix(lower, "subject:"):
		s.countWords(lower, 2)
	case strings.HasPrefix(lower, "x-spam-flag:") && strings.TrimSpace(lower[len("x-spam-flag:"):]) == "yes":
		s.add(s.threshold, "X-Spam-Flag")
	}
}

func (s *scorer) countWords(lower string, weight int) {
	for _, w := range s.words {
		if n := strings.Count(lower, w); n > 0 {
			s.add(n*weight, w)
		}
	}
}

// printer stands in for delivery: it prints each message's summary.
func printer(w io.Writer) server.EnvelopeFunc {
	return func(ctx context.Context, e *server.Envelope) error {
		n, err := io.Copy(io.Discard, e.Data)
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "accepted from=%s to=%v bytes=%d\n", e.From.Path(), e.Addresses(), n)
		return nil
	}
}

// Package dsn writes delivery status notifications (RFC 3464): the
// multipart/report a sender gets when mail to some of its recipients
// failed for good, or is delayed.
package dsn

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/smtpkit/smtpkit/smtp"
)

// Action is the Action field of a per-recipient block (RFC 3464 2.3.3).
type Action string

const (
	Failed    Action = "failed"
	Delayed   Action = "delayed"
	Delivered Action = "delivered"
	Relayed   Action = "relayed"
	Expanded  Action = "expanded"
)

// Recipient is one per-recipient block.
type Recipient struct {
	Final                 smtp.Address
	OriginalRecipientType string // from ORCPT, e.g. "rfc822"
	OriginalRecipient     string
	Action                Action
	Status                smtp.EnhancedCode
	RemoteMTA             string // host name that gave Diagnostic, if any
	Diagnostic            string // e.g. "550 5.1.1 No such user"
	LastAttempt           time.Time
	WillRetryUntil        time.Time // for Delayed
}

// Report describes one notification.
type Report struct {
	ReportingMTA string       // our host name
	To           smtp.Address // the original envelope sender
	EnvelopeID   string       // ENVID of the original message
	ArrivalDate  time.Time
	Recipients   []Recipient
	// HeadersOnly returns only the original's header (RET=HDRS).
	HeadersOnly bool
	// UTF8 marks an original sent with SMTPUTF8: its addresses and
	// header may be UTF-8, so the report uses the RFC 6533 types.
	UTF8 bool
	Date time.Time
}

// Wanted reports whether a recipient's NOTIFY asks for a notification with
// action a (RFC 3461 4.1): with no NOTIFY, failures are reported and delays
// may be; NEVER means none.
func Wanted(notify []smtp.DSNNotify, a Action) bool {
	if len(notify) == 0 {
		return a == Failed || a == Delayed
	}
	want := map[Action]smtp.DSNNotify{Failed: smtp.NotifyFailure, Delayed: smtp.NotifyDelay, Delivered: smtp.NotifySuccess, Relayed: smtp.NotifySuccess, Expanded: smtp.NotifySuccess}[a]
	for _, n := range notify {
		if n == want {
			return true
		}
	}
	return false
}

// Write writes the notification as a complete message, headers included,
// with CRLF line endings. original is the original message (nil if it is
// not to be returned).
func Write(w io.Writer, r *Report, original io.Reader) error {
	bw := bufio.NewWriter(w)
	var rb [12]byte
	rand.Read(rb[:])
	boundary := "smtpkit-" + hex.EncodeToString(rb[:])
	date := r.Date
	if date.IsZero() {
		date = time.Now()
	}
	delayed := true
	for _, rc := range r.Recipients {
		if rc.Action != Delayed {
			delayed = false
		}
	}
	subject := "Undelivered Mail Returned to Sender"
	if delayed {
		subject = "Delayed Mail (still being retried)"
	}
	mta := headerSafe(r.ReportingMTA)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format+"\r\n", args...) }

	p("From: Mail Delivery System <MAILER-DAEMON@%s>", mta)
	p("To: %s", r.To.Path())
	p("Subject: %s", subject)
	p("Date: %s", date.Format(time.RFC1123Z))
	p("Message-ID: <%s.dsn@%s>", hex.EncodeToString(rb[:8]), mta)
	p("Auto-Submitted: auto-replied") // RFC 3834: never answer this
	p("MIME-Version: 1.0")
	p("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"", boundary)
	p("")
	p("This is a MIME-encapsulated delivery status notification.")
	p("")

	// Human-readable part.
	p("--%s", boundary)
	p("Content-Type: text/plain; charset=utf-8")
	p("Content-Transfer-Encoding: 8bit")
	p("")
	if delayed {
		p("This is the mail system at %s.", mta)
		p("")
		p("Your message could not be delivered yet. It will be retried; you do not need")
		p("to send it again. These recipients are delayed:")
	} else {
		p("This is the mail system at %s.", mta)
		p("")
		p("Your message could not be delivered to one or more recipients. It has not been")
		p("delivered to the recipients below and will not be retried.")
	}
	p("")
	for _, rc := range r.Recipients {
		p("<%s>: %s", rc.Final.String(), oneLine(rc.Diagnostic))
		if rc.RemoteMTA != "" {
			p("    (reported by %s)", headerSafe(rc.RemoteMTA))
		}
	}
	p("")

	// Machine-readable part.
	p("--%s", boundary)
	if r.UTF8 {
		p("Content-Type: message/global-delivery-status") // RFC 6533
	} else {
		p("Content-Type: message/delivery-status")
	}
	p("")
	p("Reporting-MTA: dns; %s", mta)
	if r.EnvelopeID != "" {
		p("Original-Envelope-Id: %s", xtextField(r.EnvelopeID, r.UTF8))
	}
	if !r.ArrivalDate.IsZero() {
		p("Arrival-Date: %s", r.ArrivalDate.Format(time.RFC1123Z))
	}
	for _, rc := range r.Recipients {
		p("")
		p("Final-Recipient: rfc822; %s", addrField(rc.Final.String(), r.UTF8))
		if rc.OriginalRecipient != "" {
			typ := rc.OriginalRecipientType
			if typ == "" {
				typ = "rfc822"
			}
			p("Original-Recipient: %s; %s", headerSafe(typ), addrField(rc.OriginalRecipient, r.UTF8))
		}
		p("Action: %s", rc.Action)
		st := rc.Status
		if st == (smtp.EnhancedCode{}) {
			st = smtp.EnhancedCode{5, 0, 0}
			if rc.Action == Delayed {
				st = smtp.EnhancedCode{4, 0, 0}
			}
		}
		p("Status: %s", st)
		if rc.RemoteMTA != "" {
			p("Remote-MTA: dns; %s", headerSafe(rc.RemoteMTA))
		}
		if rc.Diagnostic != "" {
			// "smtp" only for a remote server's reply (RFC 3464 2.3.6);
			// our own reasons (expiry, the administrator) get our type.
			typ := "smtp"
			if rc.RemoteMTA == "" {
				typ = "X-smtpkit"
			}
			p("Diagnostic-Code: %s; %s", typ, oneLine(rc.Diagnostic))
		}
		if !rc.LastAttempt.IsZero() {
			p("Last-Attempt-Date: %s", rc.LastAttempt.Format(time.RFC1123Z))
		}
		if !rc.WillRetryUntil.IsZero() {
			p("Will-Retry-Until: %s", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	p("")

	// The original, or its header.
	if original != nil {
		p("--%s", boundary)
		switch {
		case r.HeadersOnly && r.UTF8:
			p("Content-Type: message/global-headers") // RFC 6533
		case r.HeadersOnly:
			p("Content-Type: text/rfc822-headers")
		case r.UTF8:
			p("Content-Type: message/global")
		default:
			p("Content-Type: message/rfc822")
		}
		p("")
		if err := copyOriginal(bw, original, r.HeadersOnly); err != nil {
			return err
		}
		// RFC 2046 5.1.1: the CRLF before a boundary belongs to the
		// boundary, so without another one the original's last line
		// would lose its line break.
		p("")
	}
	p("--%s--", boundary)
	return bw.Flush()
}

// copyOriginal copies the original, or only its header, ending with CRLF.
func copyOriginal(w *bufio.Writer, r io.Reader, headersOnly bool) error {
	br := bufio.NewReader(r)
	last := byte('\n')
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if headersOnly && (string(line) == "\r\n" || string(line) == "\n") {
				break
			}
			w.Write(line)
			last = line[len(line)-1]
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if last != '\n' {
		w.WriteString("\r\n")
	}
	return nil
}

func oneLine(s string) string {
	s = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
	return headerSafe(s)
}

// headerSafe drops control characters, so that nothing taken from a
// remote reply can start a new header line.
func headerSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// addrField renders an address for a DSN field: as it is in a UTF-8
// report, otherwise with non-ASCII encoded (RFC 3461's xtext for rfc822
// addresses would be utf-8-addr-xtext; MIME encoding keeps it readable).
func addrField(a string, utf8 bool) string {
	a = headerSafe(a)
	if utf8 || isASCII(a) {
		return a
	}
	return mime.QEncoding.Encode("utf-8", a)
}

func xtextField(s string, utf8 bool) string {
	if utf8 {
		return headerSafe(s)
	}
	return smtp.EncodeXtext(s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

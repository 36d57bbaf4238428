package e2e

import (
	"testing"

	"github.com/smtpkit/smtpkit/internal/dnstest"
)

// TestRelayIPv6MX: an MX host with an AAAA and an A record is reached over
// IPv6 first (here ::1, while its IPv4 address refuses connections), and
// the receiver records the relay as an IPv6 address literal.
func TestRelayIPv6MX(t *testing.T) {
	t.Parallel()
	port := mxPort(t, "::1", "127.0.0.2", "127.0.0.3")
	mx6 := startMX(t, "::1", port, false)
	startMX(t, "127.0.0.3", port, false) // the sender's, for a bounce that must not come
	dns := dnstest.New(t, append(senderZone("127.0.0.3"),
		"v6.test. MX 10 mx.v6.test.", "mx.v6.test. AAAA ::1", "mx.v6.test. A 127.0.0.2")...)
	r := startRelay(t, "", "", relayArgs(dns.Addr, port)...)
	msg := testMessage("relay-ipv6")
	id := mustQueue(t, r.SMTP, sender, []string{"b@v6.test"}, msg)

	checkRelayed(t, waitMail(t, mx6, 1)[0], msg, `\(\[IPv6:::1\]\)`)
	r.waitLog(`msg=delivered id=` + id + ` rcpt=b@v6.test mta=mx.v6.test attempt=1`)
	waitQueueEmpty(t, r.Data)
}

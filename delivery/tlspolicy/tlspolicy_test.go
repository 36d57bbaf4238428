package tlspolicy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/smtpkit/smtpkit/delivery/mx"
	"github.com/smtpkit/smtpkit/internal/dnstest"
	"github.com/smtpkit/smtpkit/internal/testcert"
	"github.com/smtpkit/smtpkit/smtp"
)

func TestParseSTS(t *testing.T) {
	good := "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n"
	sts, err := ParseSTS(strings.NewReader(good))
	if err != nil || sts.Mode != "enforce" || len(sts.MX) != 2 || sts.MaxAge != 24*time.Hour {
		t.Fatalf("%+v %v", sts, err)
	}
	for _, bad := range []string{
		"mode: enforce\nmx: a\nmax_age: 1\n",                   // no version
		"version: STSv1\nmode: enforce\nmax_age: 1\n",          // no mx
		"version: STSv1\nmode: sometimes\nmx: a\nmax_age: 1\n", // bad mode
		"version: STSv1\nmode: enforce\nmx: a\nmax_age: -1\n",  // bad max_age
	} {
		if _, err := ParseSTS(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	for _, tc := range []struct {
		host string
		ok   bool
	}{{"mx1.example.com", true}, {"MX1.example.com.", true}, {"a.example.net", true}, {"a.b.example.net", false}, {"example.net", false}, {"mx2.example.com", false}} {
		if got := matchMX(sts.MX, tc.host); got != tc.ok {
			t.Errorf("matchMX(%s) = %v", tc.host, got)
		}
	}
}

func newCert(t *testing.T, name string, parent *testcert.Cert, isCA bool) *testcert.Cert {
	t.Helper()
	c, err := testcert.New(testcert.Options{Names: []string{name}, CA: isCA, Parent: parent})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func spkiHash(c *x509.Certificate) string {
	h := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(h[:])
}

func TestVerifyDANE(t *testing.T) {
	ca := newCert(t, "ca.test", nil, true)
	leaf := newCert(t, "mx.test", ca, false).Leaf
	other := newCert(t, "other.test", nil, false).Leaf
	chain := []*x509.Certificate{leaf, ca.Leaf}
	ee := mx.TLSA{Usage: 3, Selector: 1, MatchingType: 1, Data: spkiHash(leaf)}
	ta := mx.TLSA{Usage: 2, Selector: 1, MatchingType: 1, Data: spkiHash(ca.Leaf)}
	if err := verifyDANE("mx.test", []mx.TLSA{ee}, chain); err != nil {
		t.Errorf("DANE-EE: %v", err)
	}
	// DANE-EE ignores names: a certificate for another name still matches.
	if err := verifyDANE("anything.test", []mx.TLSA{ee}, chain); err != nil {
		t.Errorf("DANE-EE with another name: %v", err)
	}
	if err := verifyDANE("mx.test", []mx.TLSA{ta}, chain); err != nil {
		t.Errorf("DANE-TA: %v", err)
	}
	if err := verifyDANE("wrong.test", []mx.TLSA{ta}, chain); err == nil {
		t.Error("DANE-TA must check the name")
	}
	if err := verifyDANE("mx.test", []mx.TLSA{{Usage: 3, Selector: 1, MatchingType: 1, Data: spkiHash(other)}}, chain); err == nil {
		t.Error("a non-matching TLSA record passed")
	}
}

func TestForHost(t *testing.T) {
	// An HTTPS server for mta-sts.sts.test, reached through a client that
	// dials it on loopback and trusts its certificate.
	ca := newCert(t, "policy-ca.test", nil, true)
	srvCert := newCert(t, "mta-sts.sts.test", ca, false)
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host != "mta-sts.sts.test" || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte("version: STSv1\nmode: enforce\nmx: *.sts.test\nmax_age: 3600\n"))
	}))
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{srvCert.TLSCertificate()}}
	hs.StartTLS()
	defer hs.Close()
	hc := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool()},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", hs.Listener.Addr().String())
		},
	}}
	leaf := newCert(t, "mx.dane.test", nil, false).Leaf
	d := dnstest.New(t,
		"_mta-sts.sts.test. TXT \"v=STSv1; id=20261128\"",
		"_25._tcp.mx.dane.test. TLSA 3 1 1 "+spkiHash(leaf),
		"plain.test. A 127.0.0.1",
	)
	p := &Policy{Resolver: &mx.Resolver{Server: d.Addr}, HTTPClient: hc}
	ctx := context.Background()

	req, err := p.ForHost(ctx, "sts.test", &mx.Route{}, "mx1.sts.test")
	if err != nil || !req.Required || req.Name != "mta-sts" || req.Config.InsecureSkipVerify {
		t.Fatalf("MTA-STS enforce: %+v %v", req, err)
	}
	var se *smtp.Error
	if _, err := p.ForHost(ctx, "sts.test", &mx.Route{}, "evil.example"); !errors.As(err, &se) || !se.Temporary() {
		t.Fatalf("MX outside the policy must defer: %v", err)
	}
	req, err = p.ForHost(ctx, "plain.test", &mx.Route{}, "plain.test")
	if err != nil || req.Required {
		t.Fatalf("no policy: %+v %v", req, err)
	}
	// DANE applies only when the MX answer was validated.
	req, err = p.ForHost(ctx, "dane.test", &mx.Route{Secure: false}, "mx.dane.test")
	if err != nil || req.Required {
		t.Fatalf("unvalidated MX must not use DANE: %+v %v", req, err)
	}
	d.SetSecure(true)
	req, err = p.ForHost(ctx, "dane.test", &mx.Route{Secure: true}, "mx.dane.test")
	if err != nil || !req.Required || req.Name != "dane" || req.Config.VerifyConnection == nil {
		t.Fatalf("DANE: %+v %v", req, err)
	}
	if err := req.Config.VerifyConnection(tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}}); err != nil {
		t.Fatalf("DANE check of the right certificate: %v", err)
	}
}

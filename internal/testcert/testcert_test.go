package testcert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"testing"
)

func mustNew(t *testing.T, o Options) *Cert {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerify(t *testing.T) {
	ca := mustNew(t, Options{CommonName: "test CA", CA: true})
	otherCA := mustNew(t, Options{CommonName: "other CA", CA: true})
	inter := mustNew(t, Options{CommonName: "intermediate", CA: true, Parent: ca})
	leaf := mustNew(t, Options{Names: []string{"mx.test", "127.0.0.1", "::1"}, Parent: ca})
	deep := mustNew(t, Options{Names: []string{"deep.test"}, Parent: inter})
	self := mustNew(t, Options{Names: []string{"localhost", "127.0.0.1"}, CA: true})

	for _, tc := range []struct {
		name  string
		cert  *Cert
		roots *Cert
		host  string // "" checks no name
		ok    bool
	}{
		{"self-signed CA is its own root", ca, ca, "", true},
		{"self-signed server for its DNS name", self, self, "localhost", true},
		{"self-signed server for its IP", self, self, "127.0.0.1", true},
		{"self-signed server for another name", self, self, "mx.test", false},
		{"leaf for its DNS name", leaf, ca, "mx.test", true},
		{"leaf for its IPv4 address", leaf, ca, "127.0.0.1", true},
		{"leaf for its IPv6 address", leaf, ca, "::1", true},
		{"leaf for a name it lacks", leaf, ca, "other.test", false},
		{"leaf for an IP it lacks", leaf, ca, "127.0.0.2", false},
		{"leaf under another CA", leaf, otherCA, "mx.test", false},
		{"leaf under an intermediate, through its chain", deep, ca, "deep.test", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			inters := x509.NewCertPool()
			for _, der := range tc.cert.Chain {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					t.Fatal(err)
				}
				inters.AddCert(c)
			}
			_, err := tc.cert.Leaf.Verify(x509.VerifyOptions{DNSName: tc.host, Roots: tc.roots.Pool(), Intermediates: inters})
			if (err == nil) != tc.ok {
				t.Errorf("Verify(%q) = %v, want ok %v", tc.host, err, tc.ok)
			}
		})
	}
}

func TestNew(t *testing.T) {
	ca := mustNew(t, Options{CA: true})
	inter := mustNew(t, Options{CA: true, Parent: ca})
	for _, tc := range []struct {
		name   string
		o      Options
		cn     string
		isCA   bool
		chain  [][]byte
		dns    []string
		ips    []net.IP
		signCA bool
	}{
		{"self-signed CA", Options{CommonName: "root", CA: true}, "root", true, nil, nil, nil, true},
		{"CN from the first name", Options{Names: []string{"a.test", "::1", "b.test"}}, "a.test", false, nil, []string{"a.test", "b.test"}, []net.IP{net.IPv6loopback}, false},
		{"issued by a root", Options{Names: []string{"mx.test"}, Parent: ca}, "mx.test", false, [][]byte{ca.Leaf.Raw}, []string{"mx.test"}, nil, false},
		{"issued by an intermediate", Options{Names: []string{"mx.test"}, Parent: inter}, "mx.test", false, [][]byte{inter.Leaf.Raw, ca.Leaf.Raw}, []string{"mx.test"}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, tc.o)
			l := c.Leaf
			if l.Subject.CommonName != tc.cn {
				t.Errorf("CN %q, want %q", l.Subject.CommonName, tc.cn)
			}
			if l.IsCA != tc.isCA || !l.BasicConstraintsValid {
				t.Errorf("IsCA %v (valid %v), want %v", l.IsCA, l.BasicConstraintsValid, tc.isCA)
			}
			if got := l.KeyUsage&x509.KeyUsageCertSign != 0; got != tc.signCA {
				t.Errorf("cert sign %v, want %v", got, tc.signCA)
			}
			if !slices.EqualFunc(c.Chain, tc.chain, bytes.Equal) {
				t.Errorf("chain of %d, want %d", len(c.Chain), len(tc.chain))
			}
			if !slices.Equal(l.DNSNames, tc.dns) {
				t.Errorf("DNS names %q, want %q", l.DNSNames, tc.dns)
			}
			if !slices.EqualFunc(l.IPAddresses, tc.ips, net.IP.Equal) {
				t.Errorf("IPs %v, want %v", l.IPAddresses, tc.ips)
			}
		})
	}
}

func TestSerial(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		s := mustNew(t, Options{}).Leaf.SerialNumber
		if s.Sign() <= 0 || s.BitLen() > 128 {
			t.Fatalf("serial %v: not a positive 128-bit number", s)
		}
		if seen[s.String()] {
			t.Fatalf("serial %v twice", s)
		}
		seen[s.String()] = true
	}
}

func TestParentNotCA(t *testing.T) {
	leaf := mustNew(t, Options{Names: []string{"leaf.test"}})
	if _, err := New(Options{Names: []string{"x.test"}, Parent: leaf}); err == nil {
		t.Fatal("a non-CA parent issued a certificate")
	}
}

func TestPEM(t *testing.T) {
	ca := mustNew(t, Options{CA: true})
	for _, tc := range []struct {
		name string
		c    *Cert
	}{
		{"self-signed", mustNew(t, Options{Names: []string{"localhost"}, CA: true})},
		{"with a chain", mustNew(t, Options{Names: []string{"mx.test"}, Parent: ca})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tls.X509KeyPair(tc.c.CertPEM(), tc.c.KeyPEM())
			if err != nil {
				t.Fatal(err)
			}
			want := tc.c.TLSCertificate()
			if !slices.EqualFunc(got.Certificate, want.Certificate, bytes.Equal) {
				t.Errorf("PEM has %d certificates, TLSCertificate %d", len(got.Certificate), len(want.Certificate))
			}
			if !got.Leaf.Equal(want.Leaf) {
				t.Error("PEM leaf differs from Leaf")
			}
			if !tc.c.Key.Equal(got.PrivateKey) {
				t.Error("PEM key differs from Key")
			}
		})
	}
}

// TestHandshake checks that TLSCertificate is usable as it stands: the
// key matches and the chain reaches a client trusting only the root.
func TestHandshake(t *testing.T) {
	ca := mustNew(t, Options{CA: true})
	inter := mustNew(t, Options{CA: true, Parent: ca})
	leaf := mustNew(t, Options{Names: []string{"mx.test"}, Parent: inter})
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{leaf.TLSCertificate()}})
	done := make(chan error, 1)
	go func() { done <- srv.Handshake() }()
	cli := tls.Client(b, &tls.Config{RootCAs: ca.Pool(), ServerName: "mx.test"})
	if err := cli.Handshake(); err != nil {
		t.Fatalf("client: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server: %v", err)
	}
}

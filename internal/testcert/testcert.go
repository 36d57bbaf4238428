// Package testcert makes throwaway X.509 certificates with ECDSA P-256
// keys, self-signed or issued by another Cert, for tests and examples only.
// It is never for production keys: the keys are made without any care for
// how they are kept, and the certificates are shaped for what tests need.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"time"
)

// Cert is a certificate and its private key.
type Cert struct {
	Leaf *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Chain is the DER of the issuers, nearest first; nil when Leaf is
	// self-signed.
	Chain [][]byte
}

// Options says what certificate New makes.
type Options struct {
	// Names are the DNS names and IP literals the certificate is valid for.
	Names []string
	// CommonName is the subject's CN; empty means the first of Names.
	CommonName string
	// CA lets the certificate sign others.
	CA bool
	// Parent issues the certificate; nil makes it self-signed.
	Parent *Cert
	// NotAfter is when the certificate expires; zero means a day from now.
	NotAfter time.Time
}

// New makes a certificate with a fresh key and a random 128-bit serial,
// valid from an hour ago (for clocks a little behind) for server
// authentication.
func New(o Options) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: o.CommonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              o.NotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  o.CA,
	}
	if tmpl.Subject.CommonName == "" && len(o.Names) > 0 {
		tmpl.Subject.CommonName = o.Names[0]
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = now.Add(24 * time.Hour)
	}
	if o.CA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	for _, n := range o.Names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	issuer, signer := tmpl, key
	var chain [][]byte
	if p := o.Parent; p != nil {
		// x509.CreateCertificate would sign anyway, and the mistake would
		// show only later as a verification failure far from its cause.
		if !p.Leaf.IsCA {
			return nil, errors.New("testcert: parent is not a CA")
		}
		issuer, signer = p.Leaf, p.Key
		chain = append([][]byte{p.Leaf.Raw}, p.Chain...)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Cert{Leaf: leaf, Key: key, Chain: chain}, nil
}

// TLSCertificate returns c for a tls.Config: the leaf, then its chain.
func (c *Cert) TLSCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: append([][]byte{c.Leaf.Raw}, c.Chain...),
		PrivateKey:  c.Key,
		Leaf:        c.Leaf,
	}
}

// CertPEM returns the leaf and then its chain as PEM, the order a server
// sends them in, so that a program loading the file serves the chain too.
func (c *Cert) CertPEM() []byte {
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Leaf.Raw})
	for _, der := range c.Chain {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return b
}

// KeyPEM returns the private key as PKCS #8 PEM.
func (c *Cert) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		// Only unsupported key types fail, and Key is always ECDSA.
		panic("testcert: " + err.Error())
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// Pool returns a pool that trusts c alone: as the root of what it issued,
// or, self-signed, as itself.
func (c *Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Leaf)
	return p
}

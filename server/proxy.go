package server

import (
	"net"
	"net/netip"
	"time"

	"github.com/pires/go-proxyproto"
)

// ProxyListener wraps l so that each connection from a trusted proxy must
// begin with a PROXY protocol header (v1 text or v2 binary, HAProxy's
// spec), whose client address then stands for the connection's: in the
// limits, the hooks, the logs and the trace header. Connections from
// addresses outside trusted are refused, since anyone who could reach the
// port could otherwise claim any address.
func ProxyListener(l net.Listener, trusted []netip.Prefix) net.Listener {
	return &proxyproto.Listener{
		Listener:          l,
		ReadHeaderTimeout: 10 * time.Second,
		ConnPolicy: func(o proxyproto.ConnPolicyOptions) (proxyproto.Policy, error) {
			ip := addrIP(o.Upstream)
			for _, p := range trusted {
				if p.Contains(ip) {
					return proxyproto.REQUIRE, nil
				}
			}
			return proxyproto.USE, proxyproto.ErrInvalidUpstream
		},
	}
}

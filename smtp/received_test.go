package smtp

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestReceivedString(t *testing.T) {
	when := time.Date(2024, 3, 9, 14, 5, 7, 0, time.FixedZone("", -5*3600))
	tests := []struct {
		name string
		r    Received
		want string
	}{{
		name: "full",
		r: Received{
			Helo: "client.example", RemoteIP: netip.MustParseAddr("192.0.2.7"), ReverseName: "mail.client.example",
			By: "mx.example", With: "ESMTPS", ID: "abc123", For: "bob@example.org",
			TLS: "version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256", Time: when,
		},
		want: "Received: from client.example (mail.client.example [192.0.2.7])\r\n" +
			"\tby mx.example with ESMTPS id abc123\r\n" +
			"\t(version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256)\r\n" +
			"\tfor <bob@example.org>; Sat, 09 Mar 2024 14:05:07 -0500\r\n",
	}, {
		name: "minimal, no for",
		r:    Received{By: "mx.example", Time: when},
		want: "Received: from unknown\r\n\tby mx.example; Sat, 09 Mar 2024 14:05:07 -0500\r\n",
	}, {
		name: "IPv6 literal form",
		r:    Received{Helo: "h", RemoteIP: netip.MustParseAddr("2001:db8::1"), By: "mx", With: "ESMTP", Time: when},
		want: "Received: from h ([IPv6:2001:db8::1])\r\n\tby mx with ESMTP; Sat, 09 Mar 2024 14:05:07 -0500\r\n",
	}, {
		name: "4in6 shown as IPv4, zone dropped",
		r:    Received{Helo: "h", RemoteIP: netip.MustParseAddr("::ffff:192.0.2.1"), By: "mx", Time: when},
		want: "Received: from h ([192.0.2.1])\r\n\tby mx; Sat, 09 Mar 2024 14:05:07 -0500\r\n",
	}, {
		name: "zone",
		r:    Received{Helo: "h", RemoteIP: netip.MustParseAddr("fe80::1%eth0"), By: "mx", Time: when},
		want: "Received: from h ([IPv6:fe80::1])\r\n\tby mx; Sat, 09 Mar 2024 14:05:07 -0500\r\n",
	}, {
		name: "header injection through HELO",
		r:    Received{Helo: "evil\r\nX-Injected: yes", By: "mx", Time: when},
		want: "Received: from evilX-Injected:_yes\r\n\tby mx; Sat, 09 Mar 2024 14:05:07 -0500\r\n",
	}, {
		name: "comment and clause forgery through HELO",
		r:    Received{Helo: "x (trusted [10.0.0.1]) by mx.example; <a>", RemoteIP: netip.MustParseAddr("192.0.2.9"), By: "mx", Time: when},
		want: "Received: from x__trusted_[10.0.0.1]__by_mx.example___a_ ([192.0.2.9])\r\n\tby mx; Sat, 09 Mar 2024 14:05:07 -0500\r\n",
	}, {
		name: "for cannot close the angle brackets",
		r:    Received{By: "mx", For: "a>\r\nBcc: x@y", Time: when},
		want: "Received: from unknown\r\n\tby mx\r\n\tfor <a_Bcc: x@y>; Sat, 09 Mar 2024 14:05:07 -0500\r\n",
	}, {
		name: "TLS comment cannot close early",
		r:    Received{By: "mx", TLS: "x) (y\n", Time: when},
		want: "Received: from unknown\r\n\tby mx\r\n\t(x_ _y); Sat, 09 Mar 2024 14:05:07 -0500\r\n",
	}}
	for _, tt := range tests {
		got := tt.r.String()
		if got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
		// Whatever the input, the field is one header: every line but the
		// first is a continuation, and it ends in CRLF.
		lines := strings.Split(strings.TrimSuffix(got, "\r\n"), "\r\n")
		for i, l := range lines {
			if strings.ContainsAny(l, "\r\n") || i > 0 && !strings.HasPrefix(l, "\t") {
				t.Errorf("%s: line %d %q is not a continuation", tt.name, i, l)
			}
		}
	}
}

func TestReceivedDefaultsTime(t *testing.T) {
	s := Received{By: "mx"}.String()
	i := strings.LastIndex(s, "; ")
	if _, err := time.Parse(time.RFC1123Z, strings.TrimSuffix(s[i+2:], "\r\n")); err != nil {
		t.Errorf("date %q: %v", s[i+2:], err)
	}
}

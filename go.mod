module github.com/smtpkit/smtpkit

go 1.26.0

require (
	github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6
	github.com/pires/go-proxyproto v0.11.0
	golang.org/x/crypto v0.59.0
)

require (
	github.com/hanwen/go-fuse/v2 v2.12.1
	github.com/miekg/dns v1.1.73
	golang.org/x/sys v0.50.0
)

require golang.org/x/net v0.62.0 // indirect

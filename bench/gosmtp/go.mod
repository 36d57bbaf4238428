module github.com/smtpkit/smtpkit/bench/gosmtp

go 1.26.0

require (
	github.com/emersion/go-smtp v0.25.1
	github.com/smtpkit/smtpkit v0.0.0
)

require github.com/emersion/go-sasl v0.0.0-20241020182733-b788ff22d5a6 // indirect

replace github.com/smtpkit/smtpkit => ../..

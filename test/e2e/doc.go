// Package e2e runs the real smtpkit binary against real SMTP peers (Python's
// smtplib, swaks, curl, msmtp, Postfix's smtp-source) on loopback ports and
// checks, byte for byte, what lands in the Maildir.
//
// A missing peer skips its test, unless SMTPKIT_REQUIRE_PEERS=1 (set by
// scripts/test.sh), which makes it a failure.
package e2e

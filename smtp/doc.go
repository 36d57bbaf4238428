// Package smtp is the vocabulary of the protocol, with no I/O: reply codes and
// the error type that carries them, mailboxes and paths, the MAIL and RCPT
// parameters of the ESMTP extensions, and the trace header a receiver adds.
//
// The server, the client and the queue all speak in these types, so an error
// raised by a user's hook, a parser or a remote server travels unchanged to
// the reply the client sees or to the bounce the sender gets.
package smtp

// Package wire is the protocol engine shared by the server and the client:
// a bounded line reader, the command and parameter parsers, the DATA and
// BDAT body readers, and a reply writer that batches replies for
// PIPELINING.
//
// Everything here works on whole lines found with bytes.IndexByte in a
// buffer the package owns, so a message body is checked and copied a run
// of lines at a time, never a byte at a time, and never held whole.
package wire

//go:build race

package e2e

// raceEnabled builds the daemon with -race when the tests run with it, so
// that real peers drive the race detector too.
const raceEnabled = true

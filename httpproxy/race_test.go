//go:build race

package httpproxy

// raceEnabled: the race detector makes sync.Pool drop what it is given at
// random, so pooled connection state is allocated again and allocation
// counts mean nothing.
const raceEnabled = true

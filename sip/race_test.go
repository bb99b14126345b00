//go:build race

package sip

// raceEnabled: the race detector makes sync.Pool drop what it is given at
// random, so x/net's pooled batch headers are allocated again and
// allocation counts mean nothing.
const raceEnabled = true

//go:build race

package accesslog

// raceEnabled: the race detector makes sync.Pool drop what it is given at
// random, so zap's pooled buffers are allocated again and allocation counts
// mean nothing.
const raceEnabled = true

// Package netparktest helps tests of servers that park idle connections:
// skip where nothing is parked, and wait for a connection to be parked or
// woken. It starts nothing and holds no state.
package netparktest

import (
	"testing"
	"time"

	"clb/netpark"
)

// SkipUnsupported skips t where connections cannot be parked.
func SkipUnsupported(t testing.TB) {
	t.Helper()
	if !netpark.Supported() {
		t.Skip("connections are not parked here")
	}
}

// Until polls cond until it holds, failing t after 10 s.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10 s: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

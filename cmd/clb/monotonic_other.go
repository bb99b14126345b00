//go:build !linux

package main

// monotonicUsec: systemd runs on Linux only; elsewhere there is no one to
// tell.
func monotonicUsec() (int64, bool) { return 0, false }

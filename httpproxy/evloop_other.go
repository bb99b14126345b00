//go:build !linux

package httpproxy

import (
	"net"
	"time"
)

// loops are Linux's (evloop_linux.go); elsewhere every connection has a
// goroutine.
type loops struct{}

func newLoops(*Server) *loops { return nil }

func (*loops) adopt(*clientConn, *net.TCPConn, time.Time) bool { return false }

func (*loops) start(bool) {}

func (*loops) stop() {}

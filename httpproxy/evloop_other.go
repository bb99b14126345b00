//go:build !linux

package httpproxy

import (
	"net"
	"time"
)

// loops are Linux's (evloop_linux.go); elsewhere every connection has a
// goroutine.
type loops struct{}

func newLoops(*Server) (*loops, error) { return nil, nil }

func (*loops) adopt(*clientConn, *net.TCPConn, time.Time) bool { return false }

func (*loops) start() {}

func (*loops) stop() {}

func (*loops) close() {}

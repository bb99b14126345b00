//go:build !linux

package sip

import (
	"errors"
	"io"
	"net/netip"
	"syscall"
)

// reusePort: several readers per UDP listener need SO_REUSEPORT, used on
// Linux only.
func reusePort(_, _ string, _ syscall.RawConn) error {
	return errors.New("several UDP readers per listener need Linux (SO_REUSEPORT)")
}

// claimGroup: no SO_REUSEPORT group to claim (a UDP listener has one
// socket, whose bind is exclusive).
func claimGroup(netip.AddrPort) (io.Closer, error) { return nil, nil }

// defaultReaders: one reader per UDP listener without SO_REUSEPORT.
func defaultReaders() int { return 1 }

// steerTo: no SO_REUSEPORT group to steer.
func steerTo(syscall.RawConn, uint32) error {
	return errors.New("steering UDP readers needs Linux (SO_ATTACH_REUSEPORT_CBPF)")
}

//go:build !linux

package netpark

import (
	"net"
	"time"
)

// Parker is not available here: New fails and a nil Parker parks nothing.
type Parker struct{}

// New returns ErrUnsupported: the owner keeps a goroutine per connection.
func New(Options) (*Parker, error) { return nil, ErrUnsupported }

// Park fails with ErrUnsupported.
func (p *Parker) Park(c net.Conn, deadline time.Time, wake, expire func()) error {
	return ErrUnsupported
}

// Run returns at once.
func (p *Parker) Run() {}

// Close does nothing.
func (p *Parker) Close() {}

// Len is 0.
func (p *Parker) Len() int { return 0 }

// Supported is false: connections cannot be parked here.
func Supported() bool { return false }

// ParkDetached fails with ErrUnsupported.
func (p *Parker) ParkDetached(c net.Conn, deadline time.Time, wake func(net.Conn), expire func()) error {
	return ErrUnsupported
}

// ParkFD returns ErrUnsupported.
func (p *Parker) ParkFD(fd int, deadline time.Time, wake func(net.Conn), expire func()) error {
	return ErrUnsupported
}

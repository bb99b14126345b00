//go:build !linux

package sip

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Elsewhere than on Linux, batches go through x/net's ReadBatch and
// WriteBatch (a datagram a system call where the system has no recvmmsg).

// sysSocket reads and writes batches: an ipv4.PacketConn or an
// ipv6.PacketConn, whose Message is one type.
type sysSocket struct {
	b interface {
		ReadBatch(ms []ipv4.Message, flags int) (int, error)
		WriteBatch(ms []ipv4.Message, flags int) (int, error)
	}
}

func newSysSocket(c *net.UDPConn) (sysSocket, error) {
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil {
		return sysSocket{ipv6.NewPacketConn(c)}, nil
	}
	return sysSocket{ipv4.NewPacketConn(c)}, nil
}

// sysBatch is x/net's view of a batch.
type sysBatch struct {
	ms    []ipv4.Message
	bufs  [][1][]byte
	addrs []net.UDPAddr
}

func newSysBatch(n int) sysBatch {
	s := sysBatch{ms: make([]ipv4.Message, n), bufs: make([][1][]byte, n), addrs: make([]net.UDPAddr, n)}
	for i := range s.ms {
		s.ms[i].Buffers = s.bufs[i][:]
	}
	return s
}

func (s *udpSocket) readBatch(d *datagrams) (int, error) {
	sb := &d.sys
	for i, b := range d.bufs {
		sb.bufs[i][0] = b
		sb.ms[i].Addr = nil
	}
	n, err := s.sys.b.ReadBatch(sb.ms[:len(d.bufs)], 0)
	for i := range max(n, 0) {
		d.n[i] = sb.ms[i].N
		if ua, ok := sb.ms[i].Addr.(*net.UDPAddr); ok {
			a := ua.AddrPort()
			d.peers[i] = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
		} else {
			d.peers[i] = netip.AddrPort{}
		}
	}
	return max(n, 0), err
}

func (s *udpSocket) writeBatch(d *datagrams, from, to int) (int, error) {
	sb := &d.sys
	for i := from; i < to; i++ {
		sb.bufs[i][0] = d.bufs[i]
		sb.addrs[i] = *net.UDPAddrFromAddrPort(d.peers[i])
		sb.ms[i].Addr = &sb.addrs[i]
	}
	n, err := s.sys.b.WriteBatch(sb.ms[from:to], 0)
	return max(n, 0), err
}

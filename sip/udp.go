package sip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"go.uber.org/zap"
)

// udpTransport is SIP over UDP: each socket read by several goroutines, a
// datagram a message.
type udpTransport struct {
	proxy   *Proxy
	log     *zap.Logger
	readers int
	wg      *sync.WaitGroup // the Server's

	socks []*net.UDPConn
	self  []endpoint // self[i] is socks[i]'s
}

func newUDPTransport(proxy *Proxy, log *zap.Logger, readers int, wg *sync.WaitGroup) *udpTransport {
	return &udpTransport{proxy: proxy, log: log, readers: readers, wg: wg}
}

func (t *udpTransport) name() string { return "udp" }

func (t *udpTransport) selves() []endpoint { return t.self }

func (t *udpTransport) listen(addr netip.AddrPort) error {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return err
	}
	_ = c.SetReadBuffer(4 << 20) // absorb bursts; the kernel may cap it
	_ = c.SetWriteBuffer(4 << 20)
	t.socks = append(t.socks, c)
	t.self = append(t.self, endpoint{"udp", localAddr(c.LocalAddr())})
	return nil
}

func (t *udpTransport) serve() {
	for i := range t.socks {
		for range t.readers {
			t.wg.Go(func() { t.read(i) })
		}
	}
}

func (t *udpTransport) close() {
	for _, c := range t.socks {
		c.Close()
	}
}

func (t *udpTransport) connWith(netip.AddrPort) conn { return nil }

func (t *udpTransport) send(addr netip.AddrPort, data []byte) error {
	i := pick(t.self, addr.Addr())
	if i < 0 {
		return fmt.Errorf("no UDP listener for %s", addr)
	}
	_, err := t.socks[i].WriteToUDPAddrPort(data, addr)
	return err
}

func (t *udpTransport) read(i int) {
	c, self := t.socks[i], t.self[i]
	buf := make([]byte, maxMessage)
	var sc scratch
	for {
		n, src, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Warn("udp read", zap.Error(err))
			continue
		}
		if n == 0 || isKeepAlive(buf[:n]) {
			continue
		}
		in := inbound{data: buf[:n], local: self, src: netip.AddrPortFrom(src.Addr().Unmap(), src.Port())}
		t.proxy.handle(&in, &sc)
	}
}

// isKeepAlive reports a datagram of only CR and LF (RFC 5626 keep-alive).
func isKeepAlive(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

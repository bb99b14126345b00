package sip

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort lets several sockets bind one UDP address (SO_REUSEPORT), the
// kernel spreading datagrams among them by the peer's address. Only
// processes of the same user can join such a group.
func reusePort(_, _ string, c syscall.RawConn) error {
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); cerr != nil {
		return cerr
	}
	return err
}

// claimGroup holds addr's SO_REUSEPORT group for this Server: an abstract
// Unix socket named after addr, which the kernel frees when it is closed or
// the process ends. Without it a second clb on the same address, run by the
// same user, would join the group unnoticed and take a share of the
// datagrams (and its steering program would replace this one's); with it
// the second fails to bind the name, and so to start.
func claimGroup(addr netip.AddrPort) (io.Closer, error) {
	name := "@clb/sip/udp/" + addr.String()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("udp %s: another process (another clb?) holds %s, the claim on this address: its SO_REUSEPORT group would share the datagrams (ss -xlp shows the holder)", addr, name)
	}
	if err != nil {
		return nil, fmt.Errorf("udp %s: claiming the address: %w", addr, err)
	}
	return c, nil
}

// defaultReaders is ServerOptions.Readers' default: a reader per CPU clb
// may use, up to maxReaders.
func defaultReaders() int { return min(runtime.GOMAXPROCS(0), maxReaders) }

// steerTo makes the kernel put every datagram of c's SO_REUSEPORT group
// on the group's socket index (a classic BPF program of one instruction,
// SO_ATTACH_REUSEPORT_CBPF); an index past the group's last socket makes
// it fall back to its own spread by the peer's address. A program attached
// replaces the one before it, for the whole group.
func steerTo(c syscall.RawConn, index uint32) error {
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: index}}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF, &fprog)
	}); cerr != nil {
		return cerr
	}
	return err
}

// Package rawtcp reads and writes TCP connections by raw socket system
// calls (recvfrom, sendto) inside their RawConn, for SIP over TCP and plain
// HTTP.
//
// Why: on a non-blocking socket a read or write cannot block, and an
// ordinary system call's entersyscall/exitsyscall woke the runtime's
// sysmon thread after every idle spell: runtime.sysmon was a fifth of
// clb's CPU in perf with SIP over TCP at 2,000 calls/s, and its context
// switches 5.7 % of clb's CPU with plain HTTP under wrk. A raw call skips
// that path; when the socket is not ready, the RawConn waits on Go's
// poller as a TCPConn's Read would, with the TCPConn's deadlines.
//
// Concurrency: as a net.Conn, except that each direction has one state of
// its own, so at most one Read, one Write and one TryWrite may run at a
// time (they may run together; Close may be called from anywhere).
// Outside Linux, Wrap returns the TCPConn itself, which has no TryWrite.
package rawtcp

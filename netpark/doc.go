// Package netpark holds idle connections without a goroutine or buffers.
//
// A server whose connection has nothing buffered left hands it to a Parker
// and lets its goroutine end; the Parker waits for the connection's socket
// to become readable (data, a close by the peer, an error) in one epoll set
// of its own (Linux: the socket stays in Go's poller too, which an epoll
// set allows), and then calls the connection's wake function, which starts
// a goroutine that takes buffers and serves what came. A parked connection
// whose deadline passes first, or that is still parked when the Parker
// closes, gets its expire function instead. Deadlines are kept in buckets
// of one Tick (a coarse timer wheel): a connection expires within a Tick
// after its deadline.
//
// So an idle connection costs its socket, Go's descriptor for it and the
// owner's small per-connection state, about 1.5 KB, rather than a goroutine
// stack and its read and write buffers. ParkDetached goes further for a
// plain socket: it keeps a duplicate descriptor of its own and closes the
// net.Conn, giving back Go's descriptor and poller entry (about 900 bytes,
// much of it memory the runtime reuses but never returns), and wakes the
// owner with a new net.Conn on the same socket.
//
// Elsewhere than on Linux, New returns ErrUnsupported and a nil *Parker,
// whose Park always fails with it: the owner keeps its goroutine waiting.
//
// Concurrency: Park and Close are safe for concurrent use. One goroutine,
// the owner's, runs Run; wake and expire are called on it, one at a time,
// so they must not block (wake starts a goroutine, expire closes). A Park
// that returned nil hands the connection over: exactly one of wake and
// expire is called, perhaps before Park returns, and until then the caller
// must neither read nor close the connection (writes are fine: the Parker
// only waits for readability).
package netpark

// Package sip is clb's SIP front end: a stateless proxy (RFC 3261 section
// 16.11) that routes every request into the cluster by its BEKey and tells
// the instance, in X-CLB-* header fields, the key and the key's replica
// partner.
//
// What it does with a message:
//
//   - An initial request from outside goes to the owner of its key (key
//     rules, else From tag + Call-ID), with clb's Via, a Record-Route
//     <sip:clb;lr;bekey=…;beroute=…;ftag=…> and the X-CLB-* fields; any
//     X-CLB-* field the sender put in is removed first.
//   - An in-dialog request with clb's Route on top travels into the cluster
//     when it comes from the side outside it (told by the From tag against
//     ftag, and dir=out for dialogs an instance began): it goes to the owner
//     of the Route's bekey, with sticky repair against its beroute. Otherwise
//     it leaves the cluster like through any loose router: to the next Route,
//     else the Request-URI. A request from a configured instance without
//     clb's Route leaves the cluster the same way.
//   - A response whose top Via is clb's loses that Via and goes to the next
//     one (received and rport honoured; over a stream transport, back on
//     the connection the request came on). Any other response is dropped.
//   - Errors are answered, never forwarded: 400 for what does not parse or
//     lacks a field a proxy needs, 416, 420, 482 (clb's own Via: a loop), 483
//     (Max-Forwards 0), 503 with Retry-After when no instance is live, 505.
//
// Messages are parsed into sipgo's structures, whose view drives every
// decision: the plain Via, From, To, Route values and Request-URI nearly
// every message has by clb's own parsers, without allocating, strings
// pointing into the message while it is handled (fastparse.go); anything
// else by sipgo's parser, so that both read a message alike; what is forwarded is the received bytes with the proxy's edits
// (wire.go), so that nothing else changes on the way. The Via branch clb adds
// is derived from the request's own transaction identity, so that a
// retransmission, a CANCEL and the ACK of a non-2xx answer reach the same
// instance as their INVITE with the same branch.
//
// Transports: the proxy's policy (proxy.go, forward.go, reply.go, route.go)
// names a transport only by its Via token, in endpoint.transport, and a
// connection only as conn; it reaches the wire through sender, which the
// Server implements. The Server holds one transport per token (udp.go:
// datagrams; stream.go: connections framed by package framing, over a
// streamNetwork, tcp.go for TCP) and hands each message to the one its
// destination names, on the destination's connection first when it has one.
// A request clb answers itself is answered on the transport, and the
// connection, it came on. TLS is one more streamTransport over a TLS
// streamNetwork; WebSocket (ws.go, wsframe.go: "ws" and "wss", RFC 7118)
// one more transport, listeners only, its frames clb's own.
//
// WebSocket clients cannot be reached by address: a dialog of one gets a
// double Record-Route (flowroute.go), the client-facing entry carrying a
// flow token (flow.go: an HMAC of the connection's transport, id and
// peer), and a request from inside that comes back with it leaves on the
// connection the token names, found in the transport's table; nothing is
// kept per dialog. Tokens that clb did not make, of a connection gone, or
// presented over another WebSocket are refused (403, 430).
//
// Concurrency: a Server's goroutines (a reader per UDP socket, where
// ServerOptions.Readers sockets, by default one per CPU, share each UDP
// listener's address; one per TCP, TLS or WebSocket connection while it
// has bytes to frame, one per stream listener accepting, one per stream
// and WebSocket transport waiting for its parked connections: an idle
// connection is parked, package netpark, with no goroutine or buffer of
// its own until it is readable again or, WebSocket, due a ping) share one
// Proxy, which is safe for
// concurrent use: each goroutine brings its own scratch memory, the
// routing state is read with one atomic load per message, and nothing is
// kept per transaction. A UDP listener's sockets are steered (steer.go):
// a classic BPF program on their SO_REUSEPORT group has the kernel put
// every datagram on socket 0 while its reader keeps up, and is swapped for
// one that lets the kernel spread peers among all the sockets when it does
// not; the readers decide, after a read, from counters each keeps on its
// own cache line (no timer, no lock but at a window's end), and every
// reader always reads its own socket. A UDP reader takes up to udpBatch
// datagrams a system call (recvmmsg) and queues the datagrams they produce
// in its own batch, sent in one system call (sendmmsg) once it has handled them all;
// nothing else touches that batch. On Linux those calls, and a TCP
// connection's reads and writes, are raw system calls that cannot block,
// made inside the socket's RawConn, which parks the goroutine on the
// runtime's poller until the socket is ready (udpbatch_linux.go,
// rawconn_linux.go). A transport's send and a
// conn's write are safe for concurrent use (a connection's writes are
// serialised, a message at a time, a WebSocket frame at a time); a stream
// or WebSocket transport's connection table, bounded by its maximum, is
// guarded by its own mutex and is not touched per message on UDP. The
// Server owns every goroutine its transports start; Serve returns once they
// have all stopped.
package sip

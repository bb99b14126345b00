// Package httpproxy is clb's HTTP front end: an HTTP/1.1 reverse proxy that
// routes every request by its session key (BEKey) to the key's owner and
// tells the instance, in X-CLB-* header fields, the key and its replica
// partner.
//
// The key is the first key rule's value, else the CLBKEY cookie, else a new
// random key set in the response; CLBROUTE remembers the instance that served
// the session, and when the owner is another one now, the request carries
// X-CLB-Previous and the response re-issues CLBROUTE (sticky repair). When
// the owner cannot be reached (connection refused or timed out: nothing of
// the request was sent), the request goes once to the replica partner, which
// holds the session's state.
//
// It is its own HTTP/1.1 implementation rather than net/http's, for two
// reasons. Framing: every head is parsed strictly (RFC 9112) and anything
// that could make clb and an instance disagree about where a request ends is
// refused with 400 and a closed connection: Content-Length with
// Transfer-Encoding, a last coding other than chunked, Transfer-Encoding in
// HTTP/1.0, a bad or repeated Content-Length, white space before a colon,
// line folding, bare CR, NUL or other control characters, a missing or
// repeated Host; net/http's server lets some of these through. And cost:
// bodies are copied as they are on the wire (checked, never re-framed), heads
// are built in reused buffers (a request allocates nothing: its key points
// into its head), each field's meaning is found once per head, a head and a
// small body go in one write, deadlines are armed per phase of a request
// rather than per read or write (conn.go), and connections to instances are
// kept alive in a pool, checked for a close by the instance before reuse.
//
// Concurrency: on Linux, plain HTTP connections are served by event loops
// (evloop_linux.go), one per GOMAXPROCS, each an epoll set its goroutine
// polls and waits on through Go's poller. A loop owns its sockets
// outright, client and instance alike (its instance connections sit in the
// shared pool under a key of its own), and serves the common exchange
// itself with the same functions as the goroutine path: it never blocks,
// keeps the phases' timeouts on its own clock, and stops reading a client
// while a response to it is pending. Any other exchange (a body to stream,
// a tunnel, an https:// instance, a failed attempt, a response that is not
// whole with a Content-Length) is handed, before anything unknown to that
// code has been sent, to a goroutine that runs the goroutine path as it
// is, and the connection returns to its loop when the request is done.
// HTTPS (and elsewhere, every) connection runs a goroutine per connection
// with a request under way or just done (two for a WebSocket tunnel); all
// share the connection pool and the balancer's Table. A connection idle
// for a moment (linger) is parked (package netpark): its goroutine or its
// place in a loop ends and its buffers go back to a pool, and the parker's
// one goroutine hands it back to its loop (or starts a goroutine) when the
// client speaks again. Serve owns them all and returns once they have
// stopped, and then stops the loops.
package httpproxy

// Package etcdkv is the small etcd v3 client clb links instead of the
// official one (go.etcd.io/etcd/client/v3, which brings gRPC and etcd's
// protobuf code: 8 MB of binary and 4 MB of resident memory at start). It
// speaks etcd's JSON gateway, HTTP/1.1 and JSON on the members' client URLs
// (POST /v3/kv/range, /v3/kv/put, /v3/watch, /v3/lease/grant,
// /v3/lease/keepalive, /v3/lease/revoke; etcd 3.4 and later), and offers
// only what clb uses: a range read (of a prefix, or a count), a put (under a
// lease), a watch that survives etcd's restarts, and leases kept alive.
//
// Mechanics it owns, so that its callers need not:
//   - Every call is bounded by Config.Timeout (dial, TLS handshake, response
//     header, and a unary call's whole exchange); a watch's stream, once
//     open, lasts until its context ends.
//   - Several endpoints: a call goes to the one that answered last and, if
//     that one cannot be reached, to the next. A request that may already
//     have reached etcd (a put whose connection broke) is not sent twice.
//   - https:// endpoints are verified against the system's roots.
//   - etcd's own error message (the gateway's JSON error body) is the
//     error's text: *Error.
//   - A response, or a message of a watch's stream, larger than
//     Config.MaxMessage is refused rather than read.
//   - Watch opens a broken stream again (etcd restarted, the network cut)
//     at most Config.RetryDelay apart, from the revision after the last one
//     it delivered: nothing lost, nothing twice. Only etcd ending the watch
//     (its revision compacted: ErrCompacted) ends it.
//
// Concurrency: a Client is safe for concurrent use. It starts no goroutine
// of its own (net/http's connections aside, closed by Close); Watch and
// KeepAlive run on their caller's goroutine until their context ends.
package etcdkv

// Package policy owns what every front end decides alike, whatever its
// protocol or transport: the key rules of SPEC section 5 (one engine for SIP
// and HTTP, so that one user's dialog and web session get one key), the
// X-CLB-* fields of SPEC section 4 (written, and a client's forged ones
// recognised), the key's percent-encoding, and the small helpers the front
// ends share.
//
// A front end implements Source over its own view of a request (the SIP
// message view, the HTTP request head); policy never sees protocol types.
//
// Concurrency: a *Rules is immutable once Compile returns it; share it
// freely and swap it whole on reload. The functions keep no state.
package policy

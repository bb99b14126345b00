// Package balancer decides where a key goes: its owner and its replica
// partner among the configured instances, given their live state.
//
// It keeps each instance's live state (up, ramping, draining, down, disabled)
// apart from its configuration, and publishes an immutable Table, rebuilt by
// the one writer on every state change and read with a single atomic load per
// request: the request path takes no lock and allocates nothing. A Table holds
// the hashing table of the configured instances (rebuilt only when the
// instances or their weights change) and, per instance, whether it is live and
// its load-factor ramp. Ramps are functions of time, so a Table stays right as
// a ramp advances; Tick only retires ramps that have ended.
//
// Route applies SPEC sections 1 and 5: the owner is the first live instance of
// the key's preference list that admits the key (u(key) < f), the replica
// partner is the instance that would own the key if the owner failed, and the
// instance a request says served it last is compared with the owner (sticky
// repair). It knows no SIP or HTTP types.
//
// Concurrency: Route, Table and Status are safe from any goroutine and take no
// lock. The writer methods (SetHealth, Enable, Disable, Drain, Update, Tick)
// serialise among themselves on Balancer.mu, held only to publish a Table
// (O(N)); Update builds a hashing table (O(2^20·N)) before it takes mu,
// holding only Balancer.updateMu, which serialises Updates. Lock order:
// updateMu before mu. The Balancer calls out only to the Observe callback,
// under mu: it must not call a writer method, nor wait for a goroutine that
// does (health.Checker calls SetHealth holding its own lock).
package balancer

// Package hashing gives every key its preference list: the order in which the
// consistent hash offers the configured instances to it. It is pure: no clock,
// lock, logging or I/O, and the same instances in any order give the same
// answers in every process. (New spreads its work over the CPUs and maps its
// table memory straight from the OS; neither shows in its answers.)
//
// # Algorithm: weighted rendezvous hashing precomputed into a slot table
//
// A key's 64-bit hash picks one of 2^20 slots (its top bits). Every instance i
// has a score in every slot s, -ln(u)/w_i, where u in (0, 1) is a hash of the
// slot and the instance's name; a slot's preference list is its instances by
// rising score, ties broken by name. The table keeps each slot's first Depth
// choices (four indices of 4, 8 or 16 bits, as few as the instances need:
// 2 bytes a slot up to 15 instances; at 16 bits the first two, read on every
// lookup, in one array and the next two in another); a walk that needs more
// scores the instances of that one slot on the spot.
//
// Why this design meets the contract (SPEC section 2):
//
//   - A score depends on the slot and on the instance's own name and weight
//     only, so lists do not depend on the order of the instances, and every
//     process computes the same floating-point scores (negLog avoids the
//     platform's log).
//   - Removing an instance deletes it from every list and leaves the others in
//     their order: only its keys move, each to the next instance of its list,
//     which is the replica partner it had. Adding one inserts it: keys move
//     only to it, and then the old owner is next: the new replica partner.
//   - With scores -ln(u)/w the first choice is i with probability w_i/Σw (a
//     race of exponential clocks), so shares follow weights with no
//     virtual-node variance; what noise is left comes from the slots (about
//     0.3% of an instance's share at N = 10 with 2^20 slots).
//   - A removed instance's slots have independent second choices, so its keys
//     spread over all survivors in proportion to their weights, as evenly as
//     its M/N slots can be spread over N-1 instances: fine while M/N² ≫ 1
//     (N ≤ a few hundred), coarse at N = 1000, where each survivor gets about
//     one of the removed instance's ~1000 slots.
//   - A lookup is a hash, one 4-byte load (two when the first choices are
//     filtered out) and at most Depth filter calls: O(1) and no allocation.
//     Only a walk past the kept choices (three of a key's first four
//     instances filtered out) costs O(N), still without allocating.
//
// Rejected: modulo and jump hash (no removal of an arbitrary instance), a ring
// of virtual nodes (10^4 nodes per instance for 2% balance; the same
// granularity limit), Maglev (no natural second choice, extra churn),
// AnchorHash and MementoHash (answers depend on history).
//
// Building a table scores every instance in every slot, O(2^20·N): about 0.1 s
// at N = 10 and 1.5 s at N = 1000 on two cores. It happens when the instances
// or their weights change, never on a state change.
//
// Concurrency: a Table is immutable once New returns it; every method is safe
// for concurrent use.
package hashing

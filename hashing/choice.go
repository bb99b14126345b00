package hashing

import "github.com/cespare/xxhash/v2"

// MaxChoices bounds the choices of a Choice.
const MaxChoices = 64

// Choice picks one of a few weighted names for a key (clb's clusters):
// weighted rendezvous hashing computed on the spot, as a slot table is not
// worth building for a handful of names. Choice i scores -ln(u_i)/w_i, u_i a
// hash of the key and the name, and the lowest score wins, so that
//
//   - a key's choice depends on the names and weights only, not on their
//     order, in every process alike (negLog is the same everywhere);
//   - choice i wins with probability w_i/Σw;
//   - changing one weight moves keys only to or from that choice, and a
//     weight of 0 takes none.
//
// The u_i hash the key's hash salted first, so that a key's choice is
// independent of the instance its slot prefers within the choice, and of
// its u(key) for the load factors (which salt it otherwise).
//
// The zero Choice has no choices. A Choice is immutable.
type Choice struct {
	seeds []uint64
	invW  []float64 // 1/w; 0 for weight 0
}

// choiceSalt makes the key hash of a Choice independent of the slot bits
// and of the load factor's u(key).
const choiceSalt = 0x3c6ef372fe94f82b

// NewChoice makes a Choice of names with weights (the same length, at most
// MaxChoices; a weight ≤ 0 is never chosen).
func NewChoice(names []string, weights []int) Choice {
	c := Choice{seeds: make([]uint64, len(names)), invW: make([]float64, len(names))}
	for i, name := range names {
		c.seeds[i] = xxhash.Sum64String(name)
		if weights[i] > 0 {
			c.invW[i] = 1 / float64(weights[i])
		}
	}
	return c
}

// Len is the number of choices.
func (c Choice) Len() int { return len(c.seeds) }

// First is the choice of the key with hash h (as Table.Hash gives it)
// among those whose bit is not set in skip and whose weight is above 0, or
// -1 when there is none. Calling it again with the winner's bit set in skip
// gives the key's next choice, and so on: the order to try choices in.
func (c Choice) First(h uint64, skip uint64) int {
	k := Mix(h ^ choiceSalt)
	best, bestScore := -1, 0.0
	for i, seed := range c.seeds {
		if skip&(1<<uint(i)) != 0 || c.invW[i] == 0 {
			continue
		}
		score := negLog(unit(Mix(k^seed))) * c.invW[i]
		if best < 0 || score < bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

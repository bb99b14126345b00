package hashing

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
)

const (
	// DefaultSlotBits gives 2^20 slots, and slot noise in shares of about
	// 0.3% (relative) at 10 instances. Their memory depends on the instances
	// (see Table): 2 MiB for up to 15, 4 MiB up to 255, 8 MiB beyond.
	DefaultSlotBits = 20
	// Depth is how many choices each slot keeps. Walks that need more compute
	// the rest of the list (O(N)); with Depth 4 that takes three of a key's
	// first four choices failing the filter.
	Depth = 4
	// MaxInstances is the most instances a table holds (16-bit indices, one
	// value kept for "none").
	MaxInstances = 1<<16 - 2

	none = 1<<16 - 1
)

// Instance is one configured instance as the hash sees it.
type Instance struct {
	Name string
	// Weight is the instance's relative share of keys; 0 takes no keys and
	// leaves the instance out of the table.
	Weight int
}

// Options replace the hash functions, for tests that work answers out by hand.
// The zero value is what production uses.
type Options struct {
	// SlotBits sets 2^SlotBits slots; 0 means DefaultSlotBits.
	SlotBits int
	// KeyHash maps a key to 64 bits; its top SlotBits bits pick the slot.
	// nil means xxhash64.
	KeyHash func(key string) uint64
	// RankHash gives instance name its rank u for a slot, as 64 bits read as
	// the fraction u in (0, 1); the score is -ln(u)/weight, lowest first.
	// nil means a 64-bit mix of the slot and the xxhash64 of the name.
	RankHash func(slot uint64, name string) uint64
}

// Table is the preference lists of every slot for one set of instances.
// Instance indices follow the names in sorted order, so they are the same for
// any order of the input.
type Table struct {
	names   []string
	weights []float64
	invW    []float64
	seeds   []uint64
	shift   uint
	// A slot's entry is Depth indices of width bits each, first choice
	// lowest, the all-ones index meaning none: the narrowest of 4, 8 and 16
	// bits that holds the instances, so that the few instances most
	// deployments have take 2 bytes a slot, not 8 (at 2^20 slots that is
	// most of an idle node's memory). At widths 4 and 8 the whole entry is
	// one word, in small or in first. At width 16 the first two choices, all
	// a lookup needs unless instances are filtered out, are kept in first,
	// apart from the others in rest, so that the memory lookups touch is
	// half the table: measured here, a random read costs 20 ns in 4 MiB and
	// 80 ns in 8 MiB, where the caches this machine shares give out.
	width    uint
	small    []uint16
	first    []uint32
	rest     []uint32
	shares   []float64 // by index: fraction of slots whose first choice it is
	keyHash  func(string) uint64
	rankHash func(slot uint64, name string) uint64
}

// New builds the table for instances with the production hashes.
func New(instances []Instance) (*Table, error) {
	return NewWithOptions(instances, Options{})
}

// NewWithOptions builds the table for instances. Instances of weight 0 are
// left out. It fails on an empty or duplicate name, a negative weight, or more
// than MaxInstances instances.
func NewWithOptions(instances []Instance, opts Options) (*Table, error) {
	bits := opts.SlotBits
	if bits == 0 {
		bits = DefaultSlotBits
	}
	if bits < 1 || bits > 30 {
		return nil, fmt.Errorf("hashing: slot bits %d out of range 1..30", bits)
	}
	in := make([]Instance, 0, len(instances))
	for _, inst := range instances {
		switch {
		case inst.Name == "":
			return nil, errors.New("hashing: instance with an empty name")
		case inst.Weight < 0:
			return nil, fmt.Errorf("hashing: instance %q has negative weight %d", inst.Name, inst.Weight)
		case inst.Weight > 0:
			in = append(in, inst)
		}
	}
	if len(in) > MaxInstances {
		return nil, fmt.Errorf("hashing: %d instances, at most %d", len(in), MaxInstances)
	}
	slices.SortFunc(in, func(a, b Instance) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(in); i++ {
		if in[i].Name == in[i-1].Name {
			return nil, fmt.Errorf("hashing: duplicate instance name %q", in[i].Name)
		}
	}

	t := &Table{
		names:    make([]string, len(in)),
		weights:  make([]float64, len(in)),
		invW:     make([]float64, len(in)),
		seeds:    make([]uint64, len(in)),
		shift:    uint(64 - bits),
		keyHash:  opts.KeyHash,
		rankHash: opts.RankHash,
	}
	switch slots := 1 << bits; {
	case len(in) < 1<<4:
		t.width, t.small = 4, slotMemory[uint16](t, slots)
	case len(in) < 1<<8:
		t.width, t.first = 8, slotMemory[uint32](t, slots)
	default:
		t.width, t.first, t.rest = 16, slotMemory[uint32](t, slots), slotMemory[uint32](t, slots)
	}
	for i, inst := range in {
		t.names[i] = inst.Name
		t.weights[i] = float64(inst.Weight)
		t.invW[i] = 1 / float64(inst.Weight)
		t.seeds[i] = xxhash.Sum64String(inst.Name)
	}
	t.fillParallel()
	t.shares = t.countShares()
	return t, nil
}

// fillParallel computes every slot's first choices, O(slots × N), on all CPUs.
// Slots are independent, so the result does not depend on the split.
func (t *Table) fillParallel() {
	thr, cut := t.thresholds()
	parts := runtime.GOMAXPROCS(0)
	if t.Slots()*len(t.names) < 1<<22 || parts < 2 {
		t.fill(0, uint64(t.Slots()), thr, cut)
		return
	}
	var wg sync.WaitGroup
	step := uint64(t.Slots() / parts)
	for p := range parts {
		lo, hi := uint64(p)*step, uint64(p+1)*step
		if p == parts-1 {
			hi = uint64(t.Slots())
		}
		wg.Go(func() { t.fill(lo, hi, thr, cut) })
	}
	wg.Wait()
}

// candidatesPerSlot is how many instances per slot, on average, pass the
// first, log-free test of fill; maxCandidates bounds them.
const (
	candidatesPerSlot = 3 * Depth
	maxCandidates     = 64
)

// thresholds picks cut = candidatesPerSlot / total weight, a score about that
// many instances per slot fall under, and gives each instance i the bound on
// ^x>>11 (x its rank hash) under which its score can be below cut: the score
// -ln(u)/w is at least (1-u)/w, and 1-u = (^x>>11 + 0.5)·2^-53.
func (t *Table) thresholds() (thr []uint64, cut float64) {
	total := 0.0
	for _, w := range t.weights {
		total += w
	}
	cut = candidatesPerSlot / total
	thr = make([]uint64, len(t.weights))
	for i, w := range t.weights {
		thr[i] = uint64(min(math.Ceil(cut*w*0x1p53), 0x1p53))
	}
	return thr, cut
}

type candidate struct {
	score float64
	index int
}

func (c candidate) before(d candidate) bool {
	return c.score < d.score || c.score == d.score && c.index < d.index
}

// fill computes slots [lo, hi). One integer comparison per instance finds the
// few whose score can be below cut (see thresholds); only those are scored
// with a log. A slot where fewer than Depth of them are surely below the cut
// is scored in full.
//
// The race detector is off here: it would make the build eight times slower
// (a minute at N = 1000 in the tests), and the loop only reads immutable
// inputs and writes the slots its own goroutine was given.
//
//go:norace
func (t *Table) fill(lo, hi uint64, thr []uint64, cut float64) {
	cut *= 1 - 1e-9 // margin for rounding: candidates surely below the cut
	var cands [maxCandidates]candidate
	for s := lo; s < hi; s++ {
		sk := slotKey(s)
		n, under := 0, 0
		for i, limit := range thr {
			var x uint64
			if t.rankHash == nil {
				x = Mix(sk ^ t.seeds[i]) // rank, inlined: this loop is the build's cost
			} else {
				x = t.rankHash(s, t.names[i])
			}
			if ^x>>11 >= limit {
				continue
			}
			if n == maxCandidates {
				under = -1
				break
			}
			sc := negLog(unit(x)) / t.weights[i]
			if sc < cut {
				under++
			}
			c := candidate{sc, i}
			j := n
			for ; j > 0 && c.before(cands[j-1]); j-- {
				cands[j] = cands[j-1]
			}
			cands[j] = c
			n++
		}
		if under < Depth && n < len(thr) {
			t.setEntry(s, t.exactSlot(s))
			continue
		}
		e := uint64(0)
		for j := Depth - 1; j >= 0; j-- {
			idx := uint64(none)
			if j < n {
				idx = uint64(cands[j].index)
			}
			e = e<<16 | idx
		}
		t.setEntry(s, e)
	}
}

// entry is slot s's Depth choices as 16-bit indices, first choice lowest
// (none for none), whatever width the table keeps them in.
func (t *Table) entry(s uint64) uint64 {
	k, e := t.keptSlot(s), uint64(0)
	for j := Depth - 1; j >= 0; j-- {
		i := k.At(j)
		if i < 0 {
			i = none
		}
		e = e<<16 | uint64(i)
	}
	return e
}

// setEntry keeps e, slot s's choices as entry gives them, in t's width.
func (t *Table) setEntry(s, e uint64) {
	if t.width == 16 {
		t.first[s], t.rest[s] = uint32(e), uint32(e>>32)
		return
	}
	w, ones := uint32(0), uint64(1)<<t.width-1
	for j := Depth - 1; j >= 0; j-- {
		i := e >> (16 * j) & none
		if i == none {
			i = ones
		}
		w = w<<t.width | uint32(i)
	}
	if t.small != nil {
		t.small[s] = uint16(w)
	} else {
		t.first[s] = w
	}
}

// exactSlot computes slot s's entry by scoring every instance.
func (t *Table) exactSlot(s uint64) uint64 {
	all := func(int) bool { return true }
	var first [Depth]int
	for j := range first {
		first[j] = none // a list shorter than Depth ends in none
	}
	prev, prevScore := -1, math.Inf(-1)
	for j := range first {
		if prev = t.scanAfter(s, prevScore, prev, all); prev < 0 {
			break
		}
		first[j], prevScore = prev, t.score(s, prev)
	}
	e := uint64(0)
	for j := Depth - 1; j >= 0; j-- {
		e = e<<16 | uint64(first[j])
	}
	return e
}

// rank is instance i's rank hash for slot s (whose slotKey is sk).
func (t *Table) rank(sk, s uint64, i int) uint64 {
	if t.rankHash != nil {
		return t.rankHash(s, t.names[i])
	}
	return Mix(sk ^ t.seeds[i])
}

func (t *Table) score(s uint64, i int) float64 {
	return negLog(unit(t.rank(slotKey(s), s, i))) / t.weights[i]
}

// unit reads x as a fraction in (0, 1).
func unit(x uint64) float64 { return (float64(x>>11) + 0.5) * 0x1p-53 }

// lowerBound is 1-unit(x), a lower bound of -ln(unit(x)), computed exactly.
func lowerBound(x uint64) float64 { return (float64(^x>>11) + 0.5) * 0x1p-53 }

func slotKey(s uint64) uint64 { return Mix(s + 0x9e3779b97f4a7c15) }

// Mix is the splitmix64 finalizer: a bijection whose output bits each depend
// on every input bit.
func Mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Len is the number of instances in the table (weight > 0).
func (t *Table) Len() int { return len(t.names) }

// Name is the name of instance i.
func (t *Table) Name(i int) string { return t.names[i] }

// Weight is the weight of instance i.
func (t *Table) Weight(i int) int { return int(t.weights[i]) }

// Index finds the index of the instance named name.
func (t *Table) Index(name string) (int, bool) {
	return slices.BinarySearch(t.names, name)
}

// slotBytes is the memory the slots take.
func (t *Table) slotBytes() int { return 2*len(t.small) + 4*len(t.first) + 4*len(t.rest) }

// Slots is the number of slots.
func (t *Table) Slots() int { return max(len(t.small), len(t.first)) }

// Hash is the key's 64-bit hash, the input of First and Next.
func (t *Table) Hash(key string) uint64 {
	if t.keyHash != nil {
		return t.keyHash(key)
	}
	return xxhash.Sum64String(key) // a direct call: this is on every request
}

// Kept is the first Depth choices of a slot's preference list, as the table
// keeps them: what a caller on a hot path walks itself, leaving First and Next
// for the rest of the list.
type Kept struct {
	t     *Table
	slot  uint64
	width uint
	word  uint32 // the slot's entry, or at width 16 its first two choices
}

// Kept gives the kept choices of h's list.
func (t *Table) Kept(h uint64) Kept { return t.keptSlot(h >> t.shift) }

func (t *Table) keptSlot(s uint64) Kept {
	if t.small != nil {
		return Kept{t, s, t.width, uint32(t.small[s])}
	}
	return Kept{t, s, t.width, t.first[s]}
}

// At is the j-th choice (0 ≤ j < Depth), or -1 past the end of a list shorter
// than Depth.
func (k Kept) At(j int) int {
	e := k.word >> (k.width * uint(j))
	if k.width == 16 && j >= 2 {
		e = k.t.rest[k.slot] >> (16 * (j - 2))
	}
	ones := uint32(1)<<k.width - 1
	if i := e & ones; i != ones {
		return int(i)
	}
	return -1
}

// First returns the first instance of h's preference list for which pass
// returns true, or -1 if none does. pass is called in list order and must not
// retain anything.
func (t *Table) First(h uint64, pass func(i int) bool) int {
	return t.walk(h, t.Kept(h), 0, pass)
}

// Next returns the first instance after instance after in h's preference list
// for which pass returns true, or -1 if none does (or after is not an index).
func (t *Table) Next(h uint64, after int, pass func(i int) bool) int {
	if after < 0 || after >= len(t.names) {
		return -1
	}
	k := t.Kept(h)
	for j := range Depth {
		if k.At(j) == after {
			return t.walk(h, k, j+1, pass)
		}
	}
	s := h >> t.shift // after is beyond the kept choices
	return t.scanAfter(s, t.score(s, after), after, pass)
}

// walk returns the first passing instance from the j-th kept choice of h's
// list on, going past the kept choices if need be.
func (t *Table) walk(h uint64, k Kept, j int, pass func(int) bool) int {
	for ; j < Depth; j++ {
		i := k.At(j)
		if i < 0 {
			return -1 // the list ended
		}
		if pass(i) {
			return i
		}
	}
	s, last := h>>t.shift, k.At(Depth-1)
	return t.scanAfter(s, t.score(s, last), last, pass)
}

// scanAfter finds the passing instance that follows (prevScore, prev) in slot
// s's list by scoring every instance: the path beyond the kept choices.
func (t *Table) scanAfter(s uint64, prevScore float64, prev int, pass func(int) bool) int {
	best, bestScore := -1, math.Inf(1)
	cut := bestScore
	sk := slotKey(s)
	for i := range t.names {
		x := t.rank(sk, s, i)
		if lowerBound(x)*t.invW[i] > cut {
			continue
		}
		sc := negLog(unit(x)) / t.weights[i]
		if sc < prevScore || sc == prevScore && i <= prev {
			continue // at or before prev in the list
		}
		if sc < bestScore && pass(i) {
			best, bestScore = i, sc
			cut = sc * (1 + 1e-9)
		}
	}
	return best
}

// AppendList appends the first n instances of h's preference list to dst (all
// of them if n < 0 or n > Len).
func (t *Table) AppendList(dst []int, h uint64, n int) []int {
	if n < 0 || n > len(t.names) {
		n = len(t.names)
	}
	all := func(int) bool { return true }
	for i := t.First(h, all); i >= 0 && n > 0; n-- {
		dst = append(dst, i)
		if n > 1 {
			i = t.Next(h, i, all)
		}
	}
	return dst
}

// Shares is, for every instance, the fraction of slots whose first choice it
// is: the share of keys it takes when every instance is live. New counts them
// once; this is a copy.
func (t *Table) Shares() []float64 { return slices.Clone(t.shares) }

// Share is Shares()[i], without the copy.
func (t *Table) Share(i int) float64 { return t.shares[i] }

// countShares counts first choices over every slot: one pass, at build.
func (t *Table) countShares() []float64 {
	shares := make([]float64, len(t.names))
	for s := range uint64(t.Slots()) {
		if i := t.keptSlot(s).At(0); i >= 0 {
			shares[i]++
		}
	}
	for i := range shares {
		shares[i] /= float64(t.Slots())
	}
	return shares
}

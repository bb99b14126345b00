package hashing

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

// fraction is the rank hash read as u: unit(fraction(u)) = u to 2^-53.
func fraction(u float64) uint64 { return uint64(u * 0x1p64) }

// handOptions give slot n to key "n" and take ranks from a table, so that
// every score can be worked out on paper.
func handOptions(bits int, ranks map[string][]float64) Options {
	return Options{
		SlotBits: bits,
		KeyHash: func(key string) uint64 {
			n, err := strconv.ParseUint(key, 10, 64)
			if err != nil {
				panic(err)
			}
			return n << (64 - bits)
		},
		RankHash: func(slot uint64, name string) uint64 { return fraction(ranks[name][slot]) },
	}
}

func names(t *Table, idx []int) []string {
	out := make([]string, len(idx))
	for k, i := range idx {
		out[k] = t.Name(i)
	}
	return out
}

// TestHandComputed pins lists worked out by hand: score = -ln(u)/weight,
// lowest first, ties by name.
func TestHandComputed(t *testing.T) {
	//                      slot 0  slot 1  slot 2  slot 3
	ranks := map[string][]float64{
		"a": {0.5, 0.9, 0.1, 0.2},
		"b": {0.25, 0.8, 0.1, 0.6},
		"c": {0.5, 0.7, 0.1, 0.3},
	}
	// a and b weigh 1, c weighs 2. Scores:
	//   slot 0: a ln2 = 0.693, b ln4 = 1.386, c ln2/2 = 0.347  → c a b
	//   slot 1: a 0.105, b 0.223, c 0.357/2 = 0.178           → a c b
	//   slot 2: a 2.303, b 2.303 (tie: by name), c 1.151      → c a b
	//   slot 3: a 1.609, b 0.511, c 1.204/2 = 0.602           → b c a
	want := map[string][]string{
		"0": {"c", "a", "b"},
		"1": {"a", "c", "b"},
		"2": {"c", "a", "b"},
		"3": {"b", "c", "a"},
	}
	// Given in an order that is not the sorted one.
	tb, err := NewWithOptions([]Instance{{"c", 2}, {"b", 1}, {"a", 1}}, handOptions(2, ranks))
	if err != nil {
		t.Fatal(err)
	}
	for key, list := range want {
		h := tb.Hash(key)
		if got := names(tb, tb.AppendList(nil, h, -1)); !slices.Equal(got, list) {
			t.Errorf("key %s: list %v, want %v", key, got, list)
		}
		all := func(int) bool { return true }
		owner := tb.First(h, all)
		if got := tb.Name(owner); got != list[0] {
			t.Errorf("key %s: owner %s, want %s", key, got, list[0])
		}
		if got := tb.Name(tb.Next(h, owner, all)); got != list[1] {
			t.Errorf("key %s: replica %s, want %s", key, got, list[1])
		}
		// Without the owner, the replica partner is first and the third
		// instance next.
		first := func(i int) bool { return tb.Name(i) != list[0] }
		if got := tb.Name(tb.First(h, first)); got != list[1] {
			t.Errorf("key %s without %s: owner %s, want %s", key, list[0], got, list[1])
		}
		if got := tb.Name(tb.Next(h, tb.First(h, first), first)); got != list[2] {
			t.Errorf("key %s without %s: replica %s, want %s", key, list[0], got, list[2])
		}
	}
}

// TestBeyondKeptChoices walks past the Depth choices a slot keeps.
func TestBeyondKeptChoices(t *testing.T) {
	ranks := map[string][]float64{} // slot 0: a > b > … > f; slot 1 reversed
	for k, name := range []string{"a", "b", "c", "d", "e", "f"} {
		ranks[name] = []float64{0.9 - 0.1*float64(k), 0.4 + 0.1*float64(k)}
	}
	in := []Instance{{"a", 1}, {"b", 1}, {"c", 1}, {"d", 1}, {"e", 1}, {"f", 1}}
	tb, err := NewWithOptions(in, handOptions(1, ranks))
	if err != nil {
		t.Fatal(err)
	}
	only := func(allowed ...string) func(int) bool {
		return func(i int) bool { return slices.Contains(allowed, tb.Name(i)) }
	}
	all := only("a", "b", "c", "d", "e", "f")
	name := func(i int) string {
		if i < 0 {
			return "-"
		}
		return tb.Name(i)
	}
	for _, tc := range []struct {
		key, after string // after "" calls First
		pass       []string
		want       string
	}{
		{key: "0", pass: []string{"e", "f"}, want: "e"},
		{key: "0", after: "e", pass: []string{"e", "f"}, want: "f"},
		{key: "0", after: "f", pass: []string{"a", "e", "f"}, want: "-"},
		{key: "0", after: "b", pass: []string{"b", "f"}, want: "f"},
		{key: "0", after: "e", pass: []string{"a", "b", "c", "d", "e", "f"}, want: "f"},
		{key: "1", pass: []string{"a", "b"}, want: "b"},
		{key: "1", after: "b", pass: []string{"a", "b"}, want: "a"},
	} {
		h, pass := tb.Hash(tc.key), only(tc.pass...)
		var got int
		if tc.after == "" {
			got = tb.First(h, pass)
		} else {
			after, _ := tb.Index(tc.after)
			got = tb.Next(h, after, pass)
		}
		if name(got) != tc.want {
			t.Errorf("key %s after %q passing %v: got %s, want %s", tc.key, tc.after, tc.pass, name(got), tc.want)
		}
	}
	if got := names(tb, tb.AppendList(nil, tb.Hash("0"), -1)); !slices.Equal(got, []string{"a", "b", "c", "d", "e", "f"}) {
		t.Errorf("slot 0 list %v", got)
	}
	if got := names(tb, tb.AppendList(nil, tb.Hash("1"), 5)); !slices.Equal(got, []string{"f", "e", "d", "c", "b"}) {
		t.Errorf("slot 1 list prefix %v", got)
	}
	if got := tb.Next(tb.Hash("0"), 99, all); got != -1 {
		t.Errorf("Next after an index that does not exist: %d", got)
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []Instance
	}{
		{name: "empty name", in: []Instance{{"", 1}}},
		{name: "negative weight", in: []Instance{{"a", -1}}},
		{name: "duplicate", in: []Instance{{"a", 1}, {"b", 1}, {"a", 2}}},
	} {
		if _, err := NewWithOptions(tc.in, Options{SlotBits: 4}); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

func TestWeightZeroTakesNoKeys(t *testing.T) {
	tb, err := NewWithOptions([]Instance{{"a", 1}, {"idle", 0}, {"b", 1}}, Options{SlotBits: 12})
	if err != nil {
		t.Fatal(err)
	}
	if tb.Len() != 2 {
		t.Fatalf("Len %d, want 2", tb.Len())
	}
	if _, ok := tb.Index("idle"); ok {
		t.Error("weight-0 instance is in the table")
	}
	empty, err := New(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := empty.First(empty.Hash("k"), func(int) bool { return true }); got != -1 {
		t.Errorf("empty table gives %d", got)
	}
}

// TestNegLog checks accuracy against math.Log and pins exact bits, so that a
// platform that fused or reordered the arithmetic would fail here.
func TestNegLog(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for range 100_000 {
		u := unit(r.Uint64())
		got, want := negLog(u), -math.Log(u)
		if math.Abs(got-want) > 4e-16*want {
			t.Fatalf("negLog(%v) = %v, math.Log gives %v", u, got, want)
		}
	}
	for _, tc := range []struct {
		u    float64
		bits uint64
	}{
		{0.5, 0x3fe62e42fefa39ef},
		{0.1, 0x40026bb1bbb55515},
		{0.999999, 0x3eb0c6f82d74d230},
		{1e-15, 0x404144f69ff9ffc4},
	} {
		if got := math.Float64bits(negLog(tc.u)); got != tc.bits {
			t.Errorf("negLog(%v) bits %#x, want %#x", tc.u, got, tc.bits)
		}
	}
}

// TestKernelMatchesExactScan checks the fast fill against scoring every
// instance of the slot.
func TestKernelMatchesExactScan(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for _, n := range []int{3, 10, 100, 1000} {
		tb := mustNew(t, randomInstances(r, n, 1, 1000))
		for range 3000 {
			s := r.Uint64N(uint64(tb.Slots()))
			if got, want := tb.entry(s), tb.exactSlot(s); got != want {
				t.Fatalf("N=%d slot %d: kernel %#x, exact %#x", n, s, got, want)
			}
		}
	}
}

// TestFilteredWalkMatchesBruteForce compares First/Next under random filters
// with the list obtained by sorting every score.
func TestFilteredWalkMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	tb := mustNew(t, randomInstances(r, 20, 1, 300))
	for range 2000 {
		h := r.Uint64()
		s := h >> tb.shift
		order := make([]int, tb.Len())
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			ca, cb := candidate{tb.score(s, a), a}, candidate{tb.score(s, b), b}
			if ca.before(cb) {
				return -1
			}
			return 1
		})
		if got := tb.AppendList(nil, h, -1); !slices.Equal(got, order) {
			t.Fatalf("slot %d: list %v, brute force %v", s, got, order)
		}
		passing := map[int]bool{}
		for i := range tb.Len() {
			passing[i] = r.IntN(10) < 3
		}
		pass := func(i int) bool { return passing[i] }
		var want, got []int
		for _, i := range order {
			if passing[i] {
				want = append(want, i)
			}
		}
		for i := tb.First(h, pass); i >= 0; i = tb.Next(h, i, pass) {
			got = append(got, i)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("slot %d: filtered walk %v, brute force %v", s, got, want)
		}
	}
}

func mustNew(t testing.TB, in []Instance) *Table {
	t.Helper()
	tb, err := New(in)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// randomInstances makes n instances with distinct names and weights drawn
// from [lo, hi].
func randomInstances(r *rand.Rand, n, lo, hi int) []Instance {
	in := make([]Instance, n)
	for i := range in {
		in[i] = Instance{Name: fmt.Sprintf("app-%d-%x", i, r.Uint32()), Weight: lo + r.IntN(hi-lo+1)}
	}
	return in
}

func randomKeys(r *rand.Rand, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%x@%d.example;tag=%x", r.Uint64(), r.IntN(1000), r.Uint32())
	}
	return keys
}

// TestSharesCountedAtBuild: the shares New counts are each instance's
// fraction of slots whose first choice it is, as lookups see them; Shares
// hands out a copy, so no caller can change the table's.
func TestSharesCountedAtBuild(t *testing.T) {
	in := []Instance{{"a", 100}, {"b", 200}, {"c", 50}, {"z", 0}}
	tb, err := NewWithOptions(in, Options{SlotBits: 12})
	if err != nil {
		t.Fatal(err)
	}
	counts := make([]int, tb.Len())
	for s := range uint64(tb.Slots()) {
		counts[tb.Kept(s<<(64-12)).At(0)]++
	}
	shares := tb.Shares()
	for i, c := range counts {
		if want := float64(c) / float64(tb.Slots()); shares[i] != want || tb.Share(i) != want {
			t.Errorf("%s: Shares %v, Share %v, counted %v", tb.Name(i), shares[i], tb.Share(i), want)
		}
	}
	shares[0] = -1
	if tb.Share(0) < 0 || tb.Shares()[0] < 0 {
		t.Error("changing what Shares returned changed the table")
	}
}

// TestSlotWidths: a table keeps its indices in the narrowest of 4, 8 and 16
// bits that holds its instances and "none", with the same answers at each
// width, up to the last index below the one meaning none.
func TestSlotWidths(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, tc := range []struct {
		instances, bytesPerSlot int
	}{
		{1, 2}, {15, 2}, {16, 4}, {255, 4}, {256, 8},
	} {
		tb, err := NewWithOptions(randomInstances(r, tc.instances, 1, 1000), Options{SlotBits: 12})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := tb.slotBytes(), tc.bytesPerSlot*tb.Slots(); got != want {
			t.Errorf("N=%d: %d bytes of slots, want %d", tc.instances, got, want)
		}
		seen := make([]bool, tc.instances)
		for s := range uint64(tb.Slots()) {
			if got, want := tb.entry(s), tb.exactSlot(s); got != want {
				t.Fatalf("N=%d slot %d: kept %#x, exact %#x", tc.instances, s, got, want)
			}
			k := tb.keptSlot(s)
			for j := range Depth {
				if i := k.At(j); i >= 0 {
					seen[i] = true
				}
			}
		}
		if !seen[tc.instances-1] {
			t.Errorf("N=%d: the last instance is in no slot's kept choices", tc.instances)
		}
	}
	// The default table of a small deployment: 2 MiB, not 8.
	tb := mustNew(t, randomInstances(r, 6, 1, 1000))
	if got := tb.slotBytes(); got != 2<<20 {
		t.Errorf("6 instances, 2^20 slots: %d bytes of slots, want 2 MiB", got)
	}
}

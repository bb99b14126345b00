package hashing

import (
	"fmt"
	"math"
	"testing"
)

// TestChoiceShares: keys spread over the choices by weight, within 2% of
// each choice's share (of all keys), and weight 0 takes none.
func TestChoiceShares(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []int
	}{
		{"equal", []int{100, 100}},
		{"uneven", []int{100, 300, 50, 0}},
		{"one closed", []int{0, 100}},
		{"five", []int{10, 20, 30, 40, 50}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			names := make([]string, len(tc.weights))
			total := 0
			for i, w := range tc.weights {
				names[i] = fmt.Sprintf("cluster-%d", i)
				total += w
			}
			c := NewChoice(names, tc.weights)
			const keys = 200_000
			got := make([]int, len(names))
			for k := range keys {
				got[c.First(Mix(uint64(k)), 0)]++
			}
			for i, w := range tc.weights {
				want := float64(w) / float64(total)
				share := float64(got[i]) / keys
				if math.Abs(share-want) > 0.02*want || w == 0 && got[i] != 0 {
					t.Errorf("%s (weight %d): share %.4f, want %.4f within 2%%", names[i], w, share, want)
				}
			}
		})
	}
}

// TestChoiceWeightChange: changing one choice's weight moves keys only to or
// from it, never between two others; the order of the names does not matter.
func TestChoiceWeightChange(t *testing.T) {
	names := []string{"blue", "green", "red"}
	before := NewChoice(names, []int{100, 100, 100})
	closed := NewChoice(names, []int{0, 100, 100})
	raised := NewChoice(names, []int{300, 100, 100})
	reversed := NewChoice([]string{"red", "green", "blue"}, []int{100, 100, 100})
	for k := range uint64(100_000) {
		h := Mix(k)
		b := before.First(h, 0)
		if c := closed.First(h, 0); b != 0 && c != b {
			t.Fatalf("key %d moved from %s to %s when blue closed", k, names[b], names[c])
		}
		if r := raised.First(h, 0); r != b && r != 0 {
			t.Fatalf("key %d moved from %s to %s when blue's weight rose", k, names[b], names[r])
		}
		if r := reversed.First(h, 0); 2-r != b {
			t.Fatalf("key %d: %s, reversed names give %s", k, names[b], names[2-r])
		}
	}
}

// TestChoiceOrder: skipping the winner gives the next choice, and with every
// choice skipped or closed there is none.
func TestChoiceOrder(t *testing.T) {
	c := NewChoice([]string{"a", "b", "c"}, []int{1, 1, 0})
	for k := range uint64(1000) {
		h := Mix(k)
		first := c.First(h, 0)
		second := c.First(h, 1<<uint(first))
		if first == 2 || second == 2 || second == first || second < 0 {
			t.Fatalf("key %d: first %d, second %d", k, first, second)
		}
		if third := c.First(h, 1<<uint(first)|1<<uint(second)); third != -1 {
			t.Fatalf("key %d: a closed choice came third: %d", k, third)
		}
	}
	if (Choice{}).First(1, 0) != -1 {
		t.Error("the zero Choice chose")
	}
}

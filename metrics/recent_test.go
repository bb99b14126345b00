package metrics

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// TestRecentSessions: distinct keys are counted over the last minute, a
// key counted once however often it is seen, within 5% from 10 to 100,000
// keys; the count falls as the minute passes and is 0 a minute after the
// last key.
func TestRecentSessions(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	for _, n := range []int{10, 300, 5_000, 100_000} {
		var r recentKeys
		for i := range n {
			at := t0.Add(time.Duration(i%50) * time.Second / 5) // within 10 s
			r.add(fmt.Sprintf("user:%d", i), at)
			r.add(fmt.Sprintf("user:%d", i), at.Add(time.Second))
		}
		got := r.count(t0.Add(20 * time.Second))
		if math.Abs(float64(got-n)) > 0.05*float64(n) {
			t.Errorf("%d keys counted %d", n, got)
		}
	}
	var r recentKeys
	for i := range 600 { // 100 new keys every 10 s for a minute
		r.add(fmt.Sprintf("k%d", i), t0.Add(time.Duration(i/100)*recentWindow))
	}
	if got := r.count(t0.Add(55 * time.Second)); math.Abs(float64(got-600)) > 30 {
		t.Errorf("after a minute: %d, want about 600", got)
	}
	if got := r.count(t0.Add(95 * time.Second)); math.Abs(float64(got-200)) > 10 {
		t.Errorf("40 s later: %d, want about 200", got)
	}
	if got := r.count(t0.Add(2 * time.Minute)); got != 0 {
		t.Errorf("a minute after the last key: %d, want 0", got)
	}
	// A window reused a minute later starts empty.
	r.add("late", t0.Add(2*time.Minute))
	if got := r.count(t0.Add(2 * time.Minute)); got != 1 {
		t.Errorf("one key in a reused window: %d", got)
	}
}

// TestRoutedByCluster: keys routed into clusters in turn are counted in
// each one's own sketch, whichever cluster was counted last.
func TestRoutedByCluster(t *testing.T) {
	m := New(nil)
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	for i := range 300 {
		m.Routed("blue", fmt.Sprint("b", i), now)
		if i%3 == 0 {
			m.Routed("green", fmt.Sprint("g", i), now)
		}
		m.Routed(string([]byte("blue")), fmt.Sprint("b", i), now) // the same name, other bytes
	}
	if b, g := m.ClusterSessions("blue", now), m.ClusterSessions("green", now); math.Abs(float64(b-300)) > 15 || math.Abs(float64(g-100)) > 5 {
		t.Errorf("blue %d sessions (want about 300), green %d (about 100)", b, g)
	}
	if n := m.ClusterSessions("red", now); n != 0 {
		t.Errorf("a cluster never routed into: %d", n)
	}
}

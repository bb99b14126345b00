package balancer

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"clb/config"
	"clb/loadfactor"
)

// sameRouting reports whether a and b route n random keys alike at now.
func sameRouting(a, b *Table, n int, now time.Time) bool {
	r := rand.New(rand.NewPCG(1, 2))
	for range n {
		key := fmt.Sprint(r.Uint64())
		for _, p := range []Protocol{AnyProtocol, SIP, HTTP} {
			da, db := a.RouteFor(p, key, "", now), b.RouteFor(p, key, "", now)
			if name(da.Owner) != name(db.Owner) || name(da.Replica) != name(db.Replica) {
				return false
			}
		}
	}
	return true
}

// TestFingerprint: two balancers built from the same instances in any order
// and given the same changes at the same moments have equal fingerprints,
// and route alike; any change that changes routing changes it, and a ramp
// step moves it on both alike (SPEC section 11).
func TestFingerprint(t *testing.T) {
	p := loadfactor.Params{Start: 0.25, Increase: 0.25, Period: 10 * time.Second}
	in := instances(5, 100, 200, 100, 50, 100)
	in[1].SIP = config.SIPAddr{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1", Port: 5071}}
	rev := slices.Clone(in)
	slices.Reverse(rev)
	a, b := mustBalancer(t, in, p), mustBalancer(t, rev, p)
	now := epoch()
	same := func(what string) {
		t.Helper()
		fa, fb := a.Table().Fingerprint(now), b.Table().Fingerprint(now)
		if fa != fb {
			t.Fatalf("%s: fingerprints %x and %x differ", what, fa, fb)
		}
		if !sameRouting(a.Table(), b.Table(), 5000, now) {
			t.Fatalf("%s: equal fingerprints, different routing", what)
		}
	}
	differs := func(what string, before uint64) {
		t.Helper()
		if f := a.Table().Fingerprint(now); f == before {
			t.Fatalf("%s: fingerprint unchanged (%x)", what, f)
		}
	}
	same("built in two orders")

	for _, step := range []struct {
		what string
		do   func(*Balancer) error
	}{
		{"inst2 drained", func(x *Balancer) error { return x.Drain("inst2", now) }},
		{"inst3 down", func(x *Balancer) error { return x.SetHealth("inst3", false, now) }},
		{"inst3 back, ramping", func(x *Balancer) error { return x.SetHealth("inst3", true, now) }},
		{"inst4 disabled", func(x *Balancer) error { return x.Disable("inst4", now) }},
		{"inst0's weight", func(x *Balancer) error {
			changed := slices.Clone(in)
			changed[0].Weight = 300
			return x.Update(changed, p, now)
		}},
	} {
		before := a.Table().Fingerprint(now)
		if err := step.do(a); err != nil {
			t.Fatal(err)
		}
		differs(step.what+" on one node", before)
		if err := step.do(b); err != nil {
			t.Fatal(err)
		}
		same(step.what + " on both")
	}

	// A ramp steps with time: the fingerprint follows on both.
	before := a.Table().Fingerprint(now)
	now = now.Add(10 * time.Second)
	differs("a ramp step", before)
	same("after a ramp step")
	// Within a step nothing changes.
	before = a.Table().Fingerprint(now)
	now = now.Add(time.Second)
	if f := a.Table().Fingerprint(now); f != before {
		t.Errorf("within a ramp step the fingerprint moved: %x → %x", before, f)
	}
	// The addresses do not count.
	moved := slices.Clone(in)
	moved[0].Weight = 300
	moved[0].HTTP = config.HTTPAddr{Endpoint: config.Endpoint{Transport: "http", Host: "127.0.0.9", Port: 1}}
	before = a.Table().Fingerprint(now)
	if err := a.Update(moved, p, now); err != nil {
		t.Fatal(err)
	}
	moved[0].HTTP.Host = "127.0.0.8"
	if err := b.Update(moved, p, now); err != nil {
		t.Fatal(err)
	}
	same("another HTTP address on each node")
	if f := a.Table().Fingerprint(now); f == before {
		t.Error("an instance that gained an HTTP address left the fingerprint alone: HTTP routing changed")
	}
}

// TestFingerprintClusters: a cluster's weight, and which cluster an
// instance is in, are part of what routing depends on.
func TestFingerprintClusters(t *testing.T) {
	in := instances(4)
	for i := range in {
		in[i].Cluster = []string{"blue", "green"}[i%2]
	}
	weights := map[string]int{"blue": 100, "green": 100}
	a, err := NewClusters(in, weights, loadfactor.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	rev := slices.Clone(in)
	slices.Reverse(rev)
	b, err := NewClusters(rev, weights, loadfactor.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	now := epoch()
	if a.Table().Fingerprint(now) != b.Table().Fingerprint(now) || !sameRouting(a.Table(), b.Table(), 5000, now) {
		t.Fatal("two orders of one clusters: file route apart")
	}
	before := a.Table().Fingerprint(now)
	if err := a.SetClusterWeight("blue", 0); err != nil {
		t.Fatal(err)
	}
	if a.Table().Fingerprint(now) == before {
		t.Error("closing blue left the fingerprint alone")
	}
	if err := a.SetClusterWeight("blue", 100); err != nil {
		t.Fatal(err)
	}
	if f := a.Table().Fingerprint(now); f != before {
		t.Errorf("blue reopened: fingerprint %x, want %x as before", f, before)
	}
	moved := slices.Clone(in)
	moved[0].Cluster = "green"
	c, err := NewClusters(moved, weights, loadfactor.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	if c.Table().Fingerprint(now) == before {
		t.Error("an instance in another cluster left the fingerprint alone")
	}
}

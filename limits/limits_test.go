package limits

import (
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// TestBucket: a source gets its burst at once, then the rate; other sources
// are apart; a nil Limiter (rate 0) allows everything.
func TestBucket(t *testing.T) {
	l := New(Config{Rate: 10, Burst: 20})
	a, b := addr(1), addr(2)
	allowed := func(src netip.Addr, n int, at time.Time) int {
		ok := 0
		for range n {
			if l.Take(src, false, at).Verdict == Allow {
				ok++
			}
		}
		return ok
	}
	if got := allowed(a, 50, t0); got != 20 {
		t.Errorf("burst: %d allowed, want 20", got)
	}
	if got := allowed(b, 5, t0); got != 5 {
		t.Errorf("another source: %d allowed, want 5", got)
	}
	if got := allowed(a, 50, t0.Add(500*time.Millisecond)); got != 5 {
		t.Errorf("half a second later: %d allowed, want 5", got)
	}
	if got := allowed(a, 50, t0.Add(time.Hour)); got != 20 {
		t.Errorf("an hour later: %d allowed, want the burst of 20 (not more)", got)
	}
	var off *Limiter = New(Config{})
	if off != nil || off.Take(a, false, t0).Verdict != Allow || off.Sources() != 0 {
		t.Error("rate 0 must give a nil Limiter that allows everything")
	}
}

// TestDialogTwiceTheRate: over ten seconds a source sending in-dialog
// requests as fast as it can gets twice its rate (and twice its burst),
// while its new requests get the rate.
func TestDialogTwiceTheRate(t *testing.T) {
	for _, inDialog := range []bool{false, true} {
		l := New(Config{Rate: 10, Burst: 10})
		ok := 0
		for ms := 0; ms < 10_000; ms++ { // 1,000 requests a second
			if l.Take(addr(1), inDialog, t0.Add(time.Duration(ms)*time.Millisecond)).Verdict == Allow {
				ok++
			}
		}
		want := 10 + 10*10 // burst + rate × 10 s (±1 for the last step)
		if inDialog {
			want *= 2
		}
		// In dialog, a request also passes on a token of the rate when the
		// dialog allowance is spent for an instant: a few more.
		if ok < want-2 || ok > want+3 {
			t.Errorf("in dialog %v: %d allowed in 10 s, want %d", inDialog, ok, want)
		}
	}
}

func TestExempt(t *testing.T) {
	l := New(Config{Rate: 1, Burst: 1, Exempt: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	for range 100 {
		if l.Take(netip.MustParseAddr("192.0.2.7"), false, t0).Verdict != Allow {
			t.Fatal("an exempt source was limited")
		}
	}
	if l.Sources() != 0 {
		t.Errorf("exempt sources take %d table entries", l.Sources())
	}
	// An IPv4-mapped IPv6 source is the IPv4 one.
	l.Take(netip.MustParseAddr("::ffff:198.51.100.1"), false, t0)
	if r := l.Take(netip.MustParseAddr("198.51.100.1"), false, t0); r.Verdict != Limit {
		t.Error("::ffff:198.51.100.1 and 198.51.100.1 have separate buckets")
	}
}

// TestLogOncePerInterval: a limited source is reported at most once per
// LogEvery, with the count limited since the last report.
func TestLogOncePerInterval(t *testing.T) {
	l := New(Config{Rate: 1, Burst: 1, LogEvery: 10 * time.Second})
	var logs []uint64
	for s := 0; s < 30; s++ {
		for range 5 {
			if r := l.Take(addr(1), false, t0.Add(time.Duration(s)*time.Second)); r.Log {
				logs = append(logs, r.Limited)
			}
		}
	}
	// 30 s, 4 of 5 limited each second: reports at 0 s, 10 s, 20 s.
	if len(logs) != 3 || logs[0] != 1 || logs[1] != 40 || logs[2] != 40 {
		t.Errorf("reports %v, want [1 40 40]", logs)
	}
}

// TestBoundedUnderSpoofedFlood: a million distinct sources leave at most
// MaxSources entries and a few megabytes, and a source seen recently is kept
// (its bucket spent) while the flood goes on.
func TestBoundedUnderSpoofedFlood(t *testing.T) {
	const maxSources = 65_536
	l := New(Config{Rate: 1, Burst: 1, MaxSources: maxSources})
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	regular := netip.MustParseAddr("198.51.100.1")
	for i := range 1_000_000 {
		if i%1000 == 0 {
			if r := l.Take(regular, false, t0); i > 0 && r.Verdict != Limit {
				t.Fatalf("after %d spoofed sources the regular one got a fresh bucket: it was evicted", i)
			}
		}
		l.Take(addr(i), false, t0)
	}
	if n := l.Sources(); n > maxSources {
		t.Errorf("%d sources in the table, want at most %d", n, maxSources)
	}
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("heap %d MB for %d sources", (int64(after.HeapInuse)-int64(before.HeapInuse))>>20, l.Sources())
	if grew := int64(after.HeapInuse) - int64(before.HeapInuse); grew > 24<<20 {
		t.Errorf("heap grew %d MB for a table of %d sources", grew>>20, maxSources)
	}
	runtime.KeepAlive(l)
}

func TestConcurrentTakes(t *testing.T) {
	l := New(Config{Rate: 100, Burst: 100, MaxSources: 128})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10_000 {
				l.Take(addr(g*1000+i%300), i%2 == 0, t0.Add(time.Duration(i)*time.Millisecond))
			}
		})
	}
	wg.Wait()
	if n := l.Sources(); n > 128 {
		t.Errorf("%d sources, want at most 128", n)
	}
}

func BenchmarkTake(b *testing.B) {
	l := New(Config{Rate: 1e6, Burst: 1e6})
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Take(addr(i%4096), false, t0)
			i++
		}
	})
}

package membership

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"clb/config"
)

// zone is a HostLookup over names the test sets: a name absent is not
// found; "hang" names wait until their look-up's context ends.
type zone struct {
	mu      sync.Mutex
	addrs   map[string][]string
	hang    map[string]bool
	lookups int
}

func newZone(records map[string][]string) *zone {
	return &zone{addrs: records, hang: map[string]bool{}}
}

func (z *zone) set(name string, addrs ...string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if addrs == nil {
		delete(z.addrs, name)
		return
	}
	z.addrs[name] = addrs
}

func (z *zone) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	z.mu.Lock()
	z.lookups++
	addrs, ok := z.addrs[host]
	hang := z.hang[host]
	z.mu.Unlock()
	if network != "ip" {
		return nil, errors.New("network " + network)
	}
	if hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func named(name, sipHost string, sipPort int, httpHost string, httpPort int) config.Instance {
	inst := config.Instance{Name: name, Weight: 100}
	if sipHost != "" {
		inst.SIP = config.SIPAddr{Endpoint: config.Endpoint{Transport: "udp", Host: sipHost, Port: sipPort}}
	}
	if httpHost != "" {
		inst.HTTP = config.HTTPAddr{Endpoint: config.Endpoint{Transport: "http", Host: httpHost, Port: httpPort}}
	}
	return inst
}

func addrs(in []config.Instance) string {
	var s []string
	for _, i := range in {
		s = append(s, i.Name+"="+i.SIP.String()+","+i.HTTP.String())
	}
	return strings.Join(s, " ")
}

// TestResolve: each host name is replaced by its one address (an IPv4 and
// an IPv6 one: the IPv4 one), looked up once however many addresses give
// it; IP addresses stay; a name not found, with several addresses of one
// family, or whose look-up outlasts the timeout is an error naming the
// instance's key, and the list is refused.
func TestResolve(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		z := newZone(map[string][]string{
			"a.test":    {"127.0.0.2"},
			"dual.test": {"::1", "127.0.0.3"},
			"v6.test":   {"::2", "::2"},
			"many.test": {"127.0.0.4", "127.0.0.5", "::3"},
		})
		z.hang["slow.test"] = true
		r := Resolver{Lookup: z, Timeout: time.Second}
		good := []config.Instance{
			named("a", "a.test", 5071, "a.test", 8081),
			named("b", "dual.test", 5072, "", 0),
			named("c", "127.0.0.9", 5073, "v6.test", 8083),
		}
		got, err := r.Resolve(t.Context(), good)
		if err != nil {
			t.Fatal(err)
		}
		want := "a=udp://127.0.0.2:5071,http://127.0.0.2:8081 b=udp://127.0.0.3:5072, c=udp://127.0.0.9:5073,http://[::2]:8083"
		if addrs(got) != want || z.lookups != 3 {
			t.Errorf("resolved %s after %d look-ups\nwant %s after 3", addrs(got), z.lookups, want)
		}
		if addrs(good) != "a=udp://a.test:5071,http://a.test:8081 b=udp://dual.test:5072, c=udp://127.0.0.9:5073,http://v6.test:8083" {
			t.Errorf("the configured list changed: %s", addrs(good))
		}

		start := time.Now()
		got, err = r.Resolve(t.Context(), []config.Instance{
			named("a", "a.test", 5071, "", 0),
			named("m", "many.test", 5072, "gone.test", 8082),
			named("s", "", 0, "slow.test", 8083),
		})
		wantErrs := []string{
			`instance "m": instances[1].sip: udp://many.test:5072: host name many.test has several addresses (127.0.0.4, 127.0.0.5): an instance is one address`,
			`instance "m": instances[1].http: http://gone.test:8082: host name gone.test not found`,
			`instance "s": instances[2].http: http://slow.test:8083: looking up host name slow.test: context deadline exceeded`,
		}
		if got != nil || err == nil || err.Error() != strings.Join(wantErrs, "\n") {
			t.Fatalf("got %s, error\n%v\nwant\n%s", addrs(got), err, strings.Join(wantErrs, "\n"))
		}
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			if _, ok := e.(*config.InstanceError); !ok {
				t.Errorf("%v is not an *InstanceError", e)
			}
		}
		if took := time.Since(start); took != time.Second {
			t.Errorf("the look-ups took %v: the slow one's timeout, 1s, in parallel with the others", took)
		}
	})
}

// resolvingTest is a Resolving source feeding a Fanout, with what it logged
// and counted.
type resolvingTest struct {
	zone   *zone
	src    *Resolving
	fanout *Fanout
	logs   *observer.ObservedLogs
	// The test reads what Run's goroutine wrote after synctest.Wait; the
	// lock tells the race detector so (a timer's wake-up is no
	// synchronisation to it).
	mu        *sync.Mutex
	published *[]string
	failed    *[]string
}

// heard is what was published, and counted as failed, so far.
func (rt resolvingTest) heard() (published, failed []string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return slices.Clone(*rt.published), slices.Clone(*rt.failed)
}

func (rt resolvingTest) lookups() int {
	rt.zone.mu.Lock()
	defer rt.zone.mu.Unlock()
	return rt.zone.lookups
}

func (rt resolvingTest) pub() []string { p, _ := rt.heard(); return p }

func (rt resolvingTest) fails() []string { _, f := rt.heard(); return f }

func (rt resolvingTest) resetFailed() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	*rt.failed = nil
}

const interval = 30 * time.Second

func newResolvingTest(t *testing.T, records map[string][]string, configured ...config.Instance) resolvingTest {
	t.Helper()
	z := newZone(records)
	r := Resolver{Lookup: z, Timeout: time.Second}
	resolved, err := r.Resolve(t.Context(), configured)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var published, failed []string
	core, logs := observer.New(zap.InfoLevel)
	f := New(Options{Subscribers: []func([]config.Instance){func(in []config.Instance) {
		mu.Lock()
		defer mu.Unlock()
		published = append(published, addrs(in))
	}}})
	src := NewResolving(ResolvingOptions{
		Resolver: r, Interval: interval, Publish: f.Source("file", resolved), Logger: zap.New(core),
		Failed: func(protocol string) {
			mu.Lock()
			defer mu.Unlock()
			failed = append(failed, protocol)
		},
	}, configured, resolved)
	z.lookups = 0
	return resolvingTest{zone: z, src: src, fanout: f, logs: logs, mu: &mu, published: &published, failed: &failed}
}

// run runs the source until the test ends, and returns once it waits for
// its first round.
func (rt resolvingTest) run(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { rt.src.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	synctest.Wait()
}

func messages(logs *observer.ObservedLogs) []string {
	var m []string
	for _, e := range logs.TakeAll() {
		m = append(m, e.Message)
	}
	return m
}

// TestResolvingFollowsAChange: a name's new address is published, whole
// list, at the next interval and not before, and logged with the instance,
// the name and both addresses; rounds where nothing changed publish
// nothing.
func TestResolvingFollowsAChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newResolvingTest(t, map[string][]string{"a.test": {"127.0.0.2"}, "b.test": {"127.0.0.3"}},
			named("a", "a.test", 5071, "a.test", 8081), named("b", "b.test", 5072, "", 0), named("c", "127.0.0.4", 5073, "", 0))
		rt.run(t)

		time.Sleep(3 * interval) // three rounds: nothing changed
		synctest.Wait()
		if len(rt.pub()) != 0 || rt.lookups() != 6 {
			t.Fatalf("published %q after %d look-ups; want nothing after 6 (2 names, 3 rounds)", rt.pub(), rt.lookups())
		}

		rt.zone.set("a.test", "127.0.0.5")
		time.Sleep(interval - time.Nanosecond)
		synctest.Wait()
		if len(rt.pub()) != 0 {
			t.Fatalf("published %q before the interval ended", rt.pub())
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		want := "a=udp://127.0.0.5:5071,http://127.0.0.5:8081 b=udp://127.0.0.3:5072, c=udp://127.0.0.4:5073,"
		if !slices.Equal(rt.pub(), []string{want}) || addrs(rt.fanout.Instances()) != want {
			t.Fatalf("published %q, fanout has %s; want [%s]", rt.pub(), addrs(rt.fanout.Instances()), want)
		}
		entries := rt.logs.FilterMessage("instance address changed").AllUntimed()
		if len(entries) != 2 {
			t.Fatalf("logged %v", entries)
		}
		for i, protocol := range []string{"sip", "http"} {
			f := entries[i].ContextMap()
			port := map[string]string{"sip": "5071", "http": "8081"}[protocol]
			if f["instance"] != "a" || f["protocol"] != protocol || f["host"] != "a.test" ||
				f["from"] != "127.0.0.2:"+port || f["to"] != "127.0.0.5:"+port {
				t.Errorf("log %v", f)
			}
		}

		time.Sleep(2 * interval)
		synctest.Wait()
		if len(rt.pub()) != 1 {
			t.Errorf("published again with nothing changed: %q", rt.pub())
		}
	})
}

// TestResolvingKeepsLastAddress: a look-up that fails (not found, timed
// out) or gives several addresses keeps the name's last address; each is
// logged and counted per address, and nothing is published, until the name
// resolves to a new address.
func TestResolvingKeepsLastAddress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newResolvingTest(t, map[string][]string{"a.test": {"127.0.0.2"}},
			named("a", "a.test", 5071, "a.test", 8081), named("b", "127.0.0.3", 5072, "", 0))
		rt.run(t)
		rt.logs.TakeAll()
		for i, fail := range []func(){
			func() { rt.zone.set("a.test") },
			func() { rt.zone.set("a.test", "127.0.0.5", "127.0.0.6") },
			func() { rt.zone.mu.Lock(); rt.zone.hang["a.test"] = true; rt.zone.mu.Unlock() }, // last: its round lasts 1s
		} {
			fail()
			rt.resetFailed()
			time.Sleep(interval) // the next round
			synctest.Wait()
			if i == 2 {
				time.Sleep(time.Second) // the look-up's timeout
				synctest.Wait()
			}
			if len(rt.pub()) != 0 {
				t.Fatalf("published %q", rt.pub())
			}
			if !slices.Equal(rt.fails(), []string{"sip", "http"}) {
				t.Errorf("counted %q, want [sip http]", rt.fails())
			}
			entries := rt.logs.TakeAll()
			if len(entries) != 2 || entries[0].Message != "host name look-up failed; the last address stays" ||
				entries[0].ContextMap()["address"] != "127.0.0.2" || entries[0].ContextMap()["host"] != "a.test" {
				t.Errorf("logged %v", entries)
			}
		}
		if addrs(rt.fanout.Instances()) != "a=udp://127.0.0.2:5071,http://127.0.0.2:8081 b=udp://127.0.0.3:5072," {
			t.Errorf("fanout has %s", addrs(rt.fanout.Instances()))
		}

		rt.zone.mu.Lock()
		rt.zone.hang["a.test"] = false
		rt.zone.mu.Unlock()
		rt.zone.set("a.test", "127.0.0.7")
		time.Sleep(interval)
		synctest.Wait()
		if want := "a=udp://127.0.0.7:5071,http://127.0.0.7:8081 b=udp://127.0.0.3:5072,"; !slices.Equal(rt.pub(), []string{want}) {
			t.Errorf("published %q, want [%s]", rt.pub(), want)
		}
	})
}

// TestResolvingRefusedList: when a new address makes a list the Fanout
// refuses (two instances at one address), the error is logged each round
// and the last addresses stay.
func TestResolvingRefusedList(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newResolvingTest(t, map[string][]string{"a.test": {"127.0.0.2"}},
			named("a", "a.test", 5071, "", 0), named("b", "127.0.0.3", 5071, "", 0))
		rt.run(t)
		rt.zone.set("a.test", "127.0.0.3")
		time.Sleep(interval)
		synctest.Wait()
		if len(rt.pub()) != 0 || addrs(rt.fanout.Instances()) != "a=udp://127.0.0.2:5071, b=udp://127.0.0.3:5071," {
			t.Fatalf("published %q, fanout has %s", rt.pub(), addrs(rt.fanout.Instances()))
		}
		if m := messages(rt.logs); !slices.Equal(m, []string{"instances with their new addresses refused; the last addresses stay"}) {
			t.Errorf("logged %q", m)
		}
	})
}

// TestResolvingSet: a reload's list is resolved and published at once,
// under the resolver and interval it brings; a new name that does not
// resolve refuses it (its key named), while a name known before keeps its
// last address.
func TestResolvingSet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newResolvingTest(t, map[string][]string{"a.test": {"127.0.0.2"}},
			named("a", "a.test", 5071, "", 0))
		rt.run(t)
		other := newZone(map[string][]string{"b.test": {"127.0.0.3"}})
		r := Resolver{Lookup: other, Timeout: time.Second}

		err := rt.src.Set(t.Context(), r, time.Minute, []config.Instance{named("a", "a.test", 5071, "", 0), named("c", "c.test", 5073, "", 0)})
		var ie *config.InstanceError
		if !errors.As(err, &ie) || ie.Key != "instances[1].sip" || !strings.Contains(err.Error(), "host name c.test not found") {
			t.Fatalf("Set with an unknown name: %v", err)
		}
		if len(rt.pub()) != 0 {
			t.Fatalf("published %q", rt.pub())
		}

		// a.test is not in the new resolver's zone: its last address stays.
		if err := rt.src.Set(t.Context(), r, time.Minute, []config.Instance{named("a", "a.test", 5071, "", 0), named("b", "b.test", 5072, "", 0)}); err != nil {
			t.Fatal(err)
		}
		want := "a=udp://127.0.0.2:5071, b=udp://127.0.0.3:5072,"
		if !slices.Equal(rt.pub(), []string{want}) {
			t.Fatalf("published %q, want [%s]", rt.pub(), want)
		}

		// The new interval: the round under way comes at 30s, the next one
		// a minute after it.
		other.set("b.test", "127.0.0.4")
		time.Sleep(interval)
		synctest.Wait()
		want = "a=udp://127.0.0.2:5071, b=udp://127.0.0.4:5072,"
		if len(rt.pub()) != 2 || rt.pub()[1] != want {
			t.Fatalf("published %q, want %s second", rt.pub(), want)
		}
		other.set("b.test", "127.0.0.5")
		time.Sleep(time.Minute - time.Nanosecond)
		synctest.Wait()
		if len(rt.pub()) != 2 {
			t.Fatalf("published %q before the new interval ended", rt.pub())
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if want := "a=udp://127.0.0.2:5071, b=udp://127.0.0.5:5072,"; len(rt.pub()) != 3 || rt.pub()[2] != want {
			t.Errorf("published %q, want %s third", rt.pub(), want)
		}
	})
}

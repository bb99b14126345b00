package membership

import (
	"strings"
	"testing"
	"time"

	"clb/config"
	"clb/dnstest"
)

// TestNetLookupAsksItsServer: NetLookup asks the DNS server it is given (a
// dnsmasq on loopback), and Resolve through it takes a name's one address,
// refuses several A records and a name the server does not know, and sees
// a changed record at the next look-up (Go's resolver keeps no cache).
func TestNetLookupAsksItsServer(t *testing.T) {
	dns := dnstest.Start(t, map[string][]string{"inst1.test": {"127.0.0.2"}, "many.test": {"127.0.0.3", "127.0.0.4"}})
	r := Resolver{Lookup: NetLookup(dns.Addr()), Timeout: 5 * time.Second}
	one := []config.Instance{named("a", "inst1.test", 5071, "inst1.test", 8081)}
	got, err := r.Resolve(t.Context(), one)
	if err != nil || addrs(got) != "a=udp://127.0.0.2:5071,http://127.0.0.2:8081" {
		t.Fatalf("resolved %s, %v", addrs(got), err)
	}
	_, err = r.Resolve(t.Context(), []config.Instance{named("m", "many.test", 5071, "", 0), named("g", "gone.test", 5072, "", 0)})
	for _, want := range []string{"host name many.test has several addresses (127.0.0.3, 127.0.0.4)", "host name gone.test not found"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	dns.Set(map[string][]string{"inst1.test": {"127.0.0.5"}})
	if got, err := r.Resolve(t.Context(), one); err != nil || addrs(got) != "a=udp://127.0.0.5:5071,http://127.0.0.5:8081" {
		t.Errorf("after the change: %s, %v", addrs(got), err)
	}
}

package membership

import (
	"net"
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

// TestNetLookupNoServer: a look-up whose server does not answer fails
// within the timeout, and its error does not name another server.
func TestNetLookupNoServer(t *testing.T) {
	l, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // reads nothing: a server that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := Resolver{Lookup: NetLookup(l.LocalAddr().(*net.UDPAddr).AddrPort()), Timeout: 200 * time.Millisecond}
	_, err = r.Resolve(t.Context(), []config.Instance{named("a", "inst1.test", 5071, "", 0)})
	if want := `instance "a": instances[0].sip: udp://inst1.test:5071: looking up host name inst1.test: i/o timeout`; err == nil || err.Error() != want {
		t.Errorf("error %v\nwant %s", err, want)
	}
}

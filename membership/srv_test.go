package membership

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"clb/balancer"
	"clb/config"
	"clb/dnstest"
	"clb/loadfactor"
)

// hosts are the addresses of the targets of the SRV tests.
var srvHosts = map[string][]string{
	"a.test": {"127.0.0.11"}, "b.test": {"127.0.0.12"}, "c.test": {"127.0.0.13"}, "d.test": {"127.0.0.14"},
}

func srvSource(dns *dnstest.Server, o SRVOptions) *SRV {
	if o.SIP == "" {
		o.SIP = "_sip._udp.app.test"
	}
	if o.HTTP == "" {
		o.HTTP = "_http._tcp.app.test"
	}
	o.Lookup = DNSClient{Servers: []netip.AddrPort{dns.Addr()}}
	o.Hosts = Resolver{Lookup: NetLookup(dns.Addr()), Timeout: 2 * time.Second}
	if o.Refresh == 0 {
		o.Refresh = 10 * time.Second
	}
	return NewSRV(o)
}

// full is a list with every address and weight.
func full(in []config.Instance) string {
	var s []string
	for _, i := range in {
		s = append(s, fmt.Sprintf("%s[%s %s %d]", i.Name, i.SIP, i.HTTP, i.Weight))
	}
	return strings.Join(s, " ")
}

// TestSRVInstances: every target of the lowest priority is an instance
// named by its host name, at its address and the record's port, weighted
// by the record; a target in both names' answers is one instance with both
// addresses (the SIP weight); the backup priority, a second record of one
// target, and a target without an address are left out, each logged once
// however many rounds see it.
func TestSRVInstances(t *testing.T) {
	dns := dnstest.StartSRV(t, srvHosts, []dnstest.SRV{
		{Name: "_sip._udp.app.test", Target: "b.test", Port: 5072, Priority: 5, Weight: 50},
		{Name: "_sip._udp.app.test", Target: "A.test", Port: 5071, Priority: 5, Weight: 100},
		{Name: "_sip._udp.app.test", Target: "a.test", Port: 5079, Priority: 5, Weight: 100},
		{Name: "_sip._udp.app.test", Target: "c.test", Port: 5073, Priority: 10, Weight: 100},
		{Name: "_sip._udp.app.test", Target: "gone.test", Port: 5074, Priority: 5, Weight: 100},
		{Name: "_http._tcp.app.test", Target: "a.test", Port: 8081, Priority: 0, Weight: 70},
		{Name: "_http._tcp.app.test", Target: "d.test", Port: 8084, Priority: 0, Weight: 30},
	})
	core, logs := observer.New(zap.WarnLevel)
	s := srvSource(dns, SRVOptions{Logger: zap.New(core)})
	list, err := s.Lookup(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := "a.test[udp://127.0.0.11:5071 http://127.0.0.11:8081 100] b.test[udp://127.0.0.12:5072  50] d.test[ http://127.0.0.14:8084 30]"
	if got := full(list); got != want {
		t.Errorf("instances\n%s\nwant\n%s", got, want)
	}
	if err := config.ValidateInstances(list, config.Listen{}); err != nil {
		t.Errorf("the list does not validate: %v", err)
	}
	s.Refresh(t.Context()) // the same warnings: not logged again
	var got []string
	for _, e := range logs.All() {
		f := e.ContextMap()
		got = append(got, fmt.Sprint(e.Message, " ", f["target"], " ", f["why"]))
	}
	wantLogs := []string{
		"SRV record left out a.test the target has a record already: an instance is one address",
		"SRV record left out c.test a backup: only the lowest priority is used",
		"address look-up of an SRV target failed; it is left out until it resolves gone.test <nil>",
		"SRV target has another weight for HTTP than for SIP; the SIP record's is its weight a.test <nil>",
	}
	if strings.Join(got, "\n") != strings.Join(wantLogs, "\n") {
		t.Errorf("logged\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantLogs, "\n"))
	}
	st := s.Status()
	if len(st) != 2 || !st[0].OK || st[0].Instances != 2 || st[1].Protocol != "http" || st[1].Instances != 2 || !s.Up() {
		t.Errorf("status %+v", st)
	}
}

// TestSRVFollowsRecords: through a Fanout, after the file's instance: an
// SRV record added joins (Joined, from the round's moment, whole multiples
// of the interval, which the 1 s TTL makes 1 s), re-weighted changes the
// weight and joins nothing, removed leaves, and added again joins again; a
// name the file gives too stays the file's and never joins.
func TestSRVFollowsRecords(t *testing.T) {
	rec := func(target string, port, weight int) dnstest.SRV {
		return dnstest.SRV{Name: "_sip._udp.app.test", Target: target, Port: port, Weight: weight}
	}
	dns := dnstest.StartSRV(t, srvHosts, []dnstest.SRV{rec("a.test", 5071, 100)})
	now := time.Date(2026, 12, 1, 12, 0, 7, 300e6, time.UTC)
	var joined []string
	s := srvSource(dns, SRVOptions{HTTP: "_http._tcp.none.test", Now: func() time.Time { return now },
		Joined: func(name string, at time.Time) { joined = append(joined, name+"@"+at.Format("05.000")) }})
	initial, err := s.Lookup(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if s.interval != time.Second {
		t.Errorf("interval %v with a 1 s TTL and a 10 s refresh, want 1s", s.interval)
	}
	f := New(Options{Subscribers: []func([]config.Instance){s.SetInstances}})
	file := named("file1", "127.0.0.21", 5071, "", 0)
	f.Source("file", []config.Instance{file, named("c.test", "127.0.0.99", 5079, "", 0)})
	publish := f.Source("dns", initial)
	s.mu.Lock()
	s.publish = publish
	s.mu.Unlock()
	step := func(srv []dnstest.SRV, want string) {
		t.Helper()
		dns.SetSRV(srv)
		now = now.Add(time.Second)
		s.Refresh(t.Context())
		if got := full(f.Instances()); got != want {
			t.Errorf("instances\n%s\nwant\n%s", got, want)
		}
	}
	base := "file1[udp://127.0.0.21:5071  100] c.test[udp://127.0.0.99:5079  100]"
	step([]dnstest.SRV{rec("a.test", 5071, 100), rec("b.test", 5072, 50), rec("c.test", 5073, 10)},
		base+" a.test[udp://127.0.0.11:5071  100] b.test[udp://127.0.0.12:5072  50]")
	step([]dnstest.SRV{rec("a.test", 5071, 100), rec("b.test", 5072, 200), rec("c.test", 5073, 10)},
		base+" a.test[udp://127.0.0.11:5071  100] b.test[udp://127.0.0.12:5072  200]")
	step([]dnstest.SRV{rec("b.test", 5072, 200), rec("c.test", 5073, 10)}, base+" b.test[udp://127.0.0.12:5072  200]")
	step([]dnstest.SRV{rec("a.test", 5071, 100), rec("b.test", 5072, 200), rec("c.test", 5073, 10)},
		base+" a.test[udp://127.0.0.11:5071  100] b.test[udp://127.0.0.12:5072  200]")
	if got, want := strings.Join(joined, " "), "b.test@08.000 a.test@11.000"; got != want {
		t.Errorf("joined %s, want %s", got, want)
	}
}

// TestSRVKeepsLastAnswer: a DNS server that stops answering changes
// nothing: the list stays, and Status and Up say the look-ups failed until
// it answers again. An answer without records is applied (its instances
// leave) when other instances remain; when none would, the Fanout refuses
// it, the last list stays and Status says why.
func TestSRVKeepsLastAnswer(t *testing.T) {
	dns := dnstest.StartSRV(t, srvHosts, []dnstest.SRV{{Name: "_sip._udp.app.test", Target: "a.test", Port: 5071, Weight: 100}})
	var failed []string
	s := srvSource(dns, SRVOptions{Failed: func(p string) { failed = append(failed, p) }})
	s.o.Hosts.Timeout = 300 * time.Millisecond
	initial, err := s.Lookup(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	f := New(Options{Listen: config.Listen{SIP: []config.SIPAddr{{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1", Port: 5060}}}}})
	publish := f.Source("dns", initial)
	s.mu.Lock()
	s.publish = publish
	s.mu.Unlock()
	want := "a.test[udp://127.0.0.11:5071  100]"

	dns.Pause()
	s.Refresh(t.Context())
	st := s.Status()
	if got := full(f.Instances()); got != want || st[0].OK || !strings.Contains(st[0].Error, "timeout") || s.Up() ||
		st[0].Instances != 1 || st[0].Answered.IsZero() {
		t.Errorf("server paused: instances %s, status %+v", got, st)
	}
	// Both SRV names, then a.test's address (its last answer is kept).
	if strings.Join(failed, " ") != "sip http sip" {
		t.Errorf("failed look-ups counted %v, want sip http sip", failed)
	}
	dns.Resume()
	s.o.Hosts.Timeout = 2 * time.Second // a loaded machine's dnsmasq may be slow to catch up
	s.Refresh(t.Context())
	if st := s.Status(); !st[0].OK || !s.Up() {
		t.Errorf("resumed: %+v", st)
	}

	dns.SetSRV(nil)
	s.Refresh(t.Context())
	st = s.Status()
	if got := full(f.Instances()); got != want || !st[0].OK || !strings.Contains(st[0].Refused, "at least one instance is required") {
		t.Errorf("no record and no other instance: instances %s, status %+v", got, st)
	}
	f.Source("etcd", []config.Instance{named("e", "127.0.0.31", 5071, "", 0)})
	s.Refresh(t.Context())
	if got, st := full(f.Instances()), s.Status(); got != "e[udp://127.0.0.31:5071  100]" || st[0].Refused != "" || st[0].Instances != 0 {
		t.Errorf("no record, another source's instance: %s, status %+v", got, st)
	}
}

// TestSRVNodesAgree: two clb nodes, each asking its own DNS server that
// holds the same records written in another order (many of one priority
// and weight, which LookupSRV would shuffle), build the same list, and
// balancers fed their lists have equal fingerprints.
func TestSRVNodesAgree(t *testing.T) {
	var records []dnstest.SRV
	hosts := map[string][]string{}
	for i := range 12 {
		name := fmt.Sprintf("n%02d.test", i)
		hosts[name] = []string{fmt.Sprintf("127.0.1.%d", i+1)}
		records = append(records, dnstest.SRV{Name: "_sip._udp.app.test", Target: name, Port: 5060, Weight: 10},
			dnstest.SRV{Name: "_http._tcp.app.test", Target: name, Port: 8080, Weight: 10})
	}
	reversed := make([]dnstest.SRV, len(records))
	for i, r := range records {
		reversed[len(records)-1-i] = r
	}
	now := time.Now()
	var lists []string
	var prints []uint64
	for _, srv := range [][]dnstest.SRV{records, reversed} {
		s := srvSource(dnstest.StartSRV(t, hosts, srv), SRVOptions{})
		list, err := s.Lookup(t.Context())
		if err != nil || len(list) != 12 {
			t.Fatalf("%d instances, %v", len(list), err)
		}
		bal, err := balancer.New(list, loadfactor.DefaultParams())
		if err != nil {
			t.Fatal(err)
		}
		lists = append(lists, full(list))
		prints = append(prints, bal.Table().Fingerprint(now))
	}
	if lists[0] != lists[1] || prints[0] != prints[1] {
		t.Errorf("lists\n%s\n%s\nfingerprints %x %x", lists[0], lists[1], prints[0], prints[1])
	}
}

// TestNextRound: rounds fall on whole multiples of the interval, the same
// moments whenever a node started.
func TestNextRound(t *testing.T) {
	base := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		now      time.Time
		interval time.Duration
		want     time.Time
	}{
		{base.Add(3 * time.Second), 10 * time.Second, base.Add(10 * time.Second)},
		{base.Add(9999 * time.Millisecond), 10 * time.Second, base.Add(10 * time.Second)},
		{base.Add(10 * time.Second), 10 * time.Second, base.Add(20 * time.Second)},
		{base.Add(1500 * time.Millisecond), time.Second, base.Add(2 * time.Second)},
	} {
		if got := nextRound(c.now, c.interval); !got.Equal(c.want) {
			t.Errorf("nextRound(%s, %v) = %s, want %s", c.now.Format("05.000"), c.interval, got.Format("05.000"), c.want.Format("05.000"))
		}
	}
}

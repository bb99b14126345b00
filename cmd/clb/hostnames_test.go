package main

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"clb/admin"
	"clb/config"
	"clb/dnstest"
)

// servedBy sends one HTTP request and one SIP MESSAGE through clb and
// returns the instances that answered them.
func servedBy(t *testing.T, httpAddr, sipAddr string, n int) (web, sip string) {
	t.Helper()
	client := http.Client{Timeout: 10 * time.Second}
	res, err := client.Get(fmt.Sprintf("http://%s/where?n=%d", httpAddr, n))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	web = res.Header.Get("X-Served-By")

	conn, err := net.Dial("udp", sipAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "MESSAGE sip:svc@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKhost%d\r\nFrom: <sip:u@example.com>;tag=t%d\r\n"+
		"To: <sip:svc@example.com>\r\nCall-ID: host-%d\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		sipAddr, conn.LocalAddr(), n, n, n)
	buf := make([]byte, 4096)
	k, err := conn.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:k]), "SIP/2.0 200 ") {
		t.Fatalf("MESSAGE: %q, %v", buf[:k], err)
	}
	for _, line := range strings.Split(string(buf[:k]), "\r\n") {
		if v, ok := strings.CutPrefix(line, "X-Served-By: "); ok {
			sip = v
		}
	}
	return web, sip
}

// TestHostNameFollowsDNS: an instance named by a host name (resolved by a
// dnsmasq on loopback) gets SIP and HTTP at the name's address; when the
// record moves to another loopback address, where another process listens
// on the same ports, clb logs the change and traffic follows without a
// reload; when the name then disappears, the last address stays.
func TestHostNameFollowsDNS(t *testing.T) {
	dns := dnstest.Start(t, map[string][]string{"inst1.test": {"127.0.0.1"}})
	first := newBackend(t, "first")
	sipPort := first.sip.LocalAddr().(*net.UDPAddr).Port
	httpPort := first.web.Listener.Addr().(*net.TCPAddr).Port
	second := newBackendAt(t, "second", net.IPv4(127, 0, 0, 2), sipPort, httpPort)
	path := writeFile(t, fmt.Sprintf(`listen: {sip: [udp://127.0.0.1:0], http: 127.0.0.1:0, admin: 127.0.0.1:0}
health: {interval: 200ms, timeout: 200ms}
discovery: {resolver: "%s", resolve_interval: 100ms, resolve_timeout: 100ms}
instances:
  - {name: inst1, sip: "udp://inst1.test:%d", http: "http://inst1.test:%d"}
`, dns.Addr(), sipPort, httpPort))
	p := startCLB(t, path)
	httpAddr, adminAddr := p.started["http"].(string), p.started["admin"].(string)
	sipAddr := strings.TrimPrefix(p.started["sip"].([]any)[0].(string), "udp://")

	if web, sip := servedBy(t, httpAddr, sipAddr, 1); web != "first" || sip != "first" {
		t.Fatalf("before the change: HTTP served by %q, SIP by %q; want first", web, sip)
	}

	dns.Set(map[string][]string{"inst1.test": {"127.0.0.2"}})
	for _, protocol := range []string{"sip", "http"} {
		e := p.log("instance address changed")
		port := map[string]int{"sip": sipPort, "http": httpPort}[protocol]
		if e["instance"] != "inst1" || e["protocol"] != protocol || e["host"] != "inst1.test" ||
			e["from"] != fmt.Sprintf("127.0.0.1:%d", port) || e["to"] != fmt.Sprintf("127.0.0.2:%d", port) {
			t.Errorf("log %v", e)
		}
	}
	if web, sip := servedBy(t, httpAddr, sipAddr, 2); web != "second" || sip != "second" {
		t.Errorf("after the change: HTTP served by %q, SIP by %q; want second", web, sip)
	}
	var st admin.Status
	adminCall(t, adminAddr, "GET", "/api/v1/status", &st)
	if len(st.Instances) != 1 || st.Instances[0].HTTP != fmt.Sprintf("http://127.0.0.2:%d", httpPort) {
		t.Errorf("status %+v", st.Instances)
	}

	dns.Set(map[string][]string{})
	if e := p.log("host name look-up failed; the last address stays"); e["host"] != "inst1.test" || e["address"] != "127.0.0.2" {
		t.Errorf("log %v", e)
	}
	if web, sip := servedBy(t, httpAddr, sipAddr, 3); web != "second" || sip != "second" {
		t.Errorf("with the name gone: HTTP served by %q, SIP by %q; want second", web, sip)
	}
	if n := second.webN.Load() + second.sipN.Load(); n != 4 {
		t.Errorf("second answered %d requests, want 4", n)
	}
}

// TestCheckHostNames: clb check resolves instances' host names with
// discovery.resolver and prints each address next to its name; a name the
// server does not know, or that has several A records, is an error at its
// line of the file.
func TestCheckHostNames(t *testing.T) {
	dns := dnstest.Start(t, map[string][]string{"inst1.test": {"127.0.0.2"}, "many.test": {"127.0.0.3", "127.0.0.4"}})
	head := fmt.Sprintf("listen: {sip: [udp://127.0.0.1:5060], http: 127.0.0.1:8080}\ndiscovery: {resolver: %q}\ninstances:\n", dns.Addr())
	code, out, errOut := clb(t, "", "check", "-config", writeFile(t, head+
		"  - {name: inst1, sip: udp://inst1.test:5071, http: http://inst1.test:8081}\n"+
		"  - {name: inst2, sip: udp://127.0.0.1:5072}\n"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"inst1  100     49.9%  udp://inst1.test:5071 (127.0.0.2:5071)  http://inst1.test:8081 (127.0.0.2:8081)",
		"inst2  100     50.1%  udp://127.0.0.1:5072                    -",
		"host names: resolved by " + dns.Addr().String() + ", again every 30s (timeout 2s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}

	path := writeFile(t, head+
		"  - {name: inst1, sip: udp://gone.test:5071}\n"+
		"  - {name: inst2, http: http://many.test:8082}\n")
	code, out, errOut = clb(t, "", "check", "-config", path)
	for _, want := range []string{
		path + ":4: instances[0].sip: udp://gone.test:5071: host name gone.test not found",
		path + ":5: instances[1].http: http://many.test:8082: host name many.test has several addresses (127.0.0.3, 127.0.0.4): an instance is one address",
		"clb check: " + path + " is not valid",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if code != 1 || out != "" {
		t.Errorf("exit %d, stdout %q", code, out)
	}
}

// TestReloadResolvesHostNames: a reload resolves the file's host names
// with the resolver it names: a new name that does not resolve refuses it
// at its line and the running instances stay; one that does is routed to
// at its address; a name known before whose look-up now fails keeps its
// last address.
func TestReloadResolvesHostNames(t *testing.T) {
	dns := dnstest.Start(t, map[string][]string{"a.test": {"127.0.0.2"}, "b.test": {"127.0.0.3"}})
	other := dnstest.Start(t, map[string][]string{"b.test": {"127.0.0.4"}})
	file := func(resolver netip.AddrPort, extra string) string {
		return fmt.Sprintf("listen: {http: 127.0.0.1:0}\nhealth: {active: false}\ndiscovery: {resolver: %q, resolve_interval: 1h}\ninstances:\n"+
			"  - {name: a, http: http://a.test:8081}\n%s", resolver, extra)
	}
	path := writeFile(t, file(dns.Addr(), ""))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := newNode(cfg, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)))
	if err != nil {
		t.Fatal(err)
	}
	defer n.close()
	addrs := func() string {
		var s []string
		for _, st := range n.bal.Table().Status(time.Now()) {
			s = append(s, st.Instance.Name+"="+st.Instance.HTTP.Addr())
		}
		return strings.Join(s, " ")
	}
	if got := addrs(); got != "a=127.0.0.2:8081" {
		t.Fatalf("at start: %s", got)
	}

	reload := func(text string) error {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := n.reload()
		return err
	}
	err = reload(file(dns.Addr(), "  - {name: c, http: http://c.test:8083}\n"))
	if want := path + ":6: instances[1].http: http://c.test:8083: host name c.test not found"; err == nil || err.Error() != want {
		t.Errorf("reload with an unknown name: %v\nwant %s", err, want)
	}
	if got := addrs(); got != "a=127.0.0.2:8081" {
		t.Errorf("after the refused reload: %s", got)
	}
	// other knows b.test elsewhere and a.test not at all: a keeps its address.
	if err := reload(file(other.Addr(), "  - {name: b, http: http://b.test:8082}\n")); err != nil {
		t.Fatal(err)
	}
	if got := addrs(); got != "a=127.0.0.2:8081 b=127.0.0.4:8082" {
		t.Errorf("after the reload: %s", got)
	}
}

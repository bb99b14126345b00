package membership

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"clb/dnstest"
)

// TestDNSClientSRV: DNSClient asks a real dnsmasq for SRV records and
// gives every record with its TTL, through an alias (CNAME) too; a name
// without records is an answer with none (not an error); a server that stops answering is an error
// within the look-up's deadline, and answers again once resumed.
func TestDNSClientSRV(t *testing.T) {
	dns := dnstest.StartSRV(t, nil, []dnstest.SRV{
		{Name: "_sip._udp.app.test", Target: "b.test", Port: 5072, Priority: 0, Weight: 50},
		{Name: "_sip._udp.app.test", Target: "A.test", Port: 5071, Priority: 0, Weight: 100},
		{Name: "_sip._udp.app.test", Target: "c.test", Port: 5073, Priority: 10, Weight: 1},
	}, dnstest.CNAME{Alias: "_sip._udp.alias.test", Target: "_sip._udp.app.test"})
	c := DNSClient{Servers: []netip.AddrPort{dns.Addr()}}
	ans, err := c.LookupSRV(t.Context(), "_sip._udp.app.test")
	if err != nil {
		t.Fatal(err)
	}
	got := records(ans)
	if want := "a.test:5071/0/100 b.test:5072/0/50 c.test:5073/10/1"; got != want {
		t.Errorf("records %s, want %s", got, want)
	}
	if ans.TTL != dnstest.TTL*time.Second {
		t.Errorf("TTL %v, want %ds", ans.TTL, dnstest.TTL)
	}
	if ans, err := c.LookupSRV(t.Context(), "_sip._udp.alias.test"); err != nil || records(ans) != got {
		t.Errorf("through the alias: %s, %v; want %s", records(ans), err, got)
	}
	for _, name := range []string{"_http._tcp.app.test", "_sip._udp.nowhere.test."} {
		if ans, err := c.LookupSRV(t.Context(), name); err != nil || len(ans.Records) != 0 {
			t.Errorf("%s: %v, %v; want no record and no error", name, ans, err)
		}
	}
	dns.Pause()
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.LookupSRV(ctx, "_sip._udp.app.test"); err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("a paused server: %v, want a timeout", err)
	}
	dns.Resume()
	if ans, err := c.LookupSRV(t.Context(), "_sip._udp.app.test"); err != nil || len(ans.Records) != 3 {
		t.Errorf("resumed: %v, %v", ans, err)
	}
}

func records(ans SRVAnswer) string {
	var s []string
	for _, r := range ans.Records {
		s = append(s, fmt.Sprintf("%s:%d/%d/%d", r.Target, r.Port, r.Priority, r.Weight))
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

// TestDNSClientResendsLostQuestion: a UDP question lost on its way (here
// by a relay in front of a real dnsmasq that drops the first datagram) is
// sent again, and the look-up is answered well within its deadline.
func TestDNSClientResendsLostQuestion(t *testing.T) {
	dns := dnstest.StartSRV(t, nil, []dnstest.SRV{{Name: "_sip._udp.app.test", Target: "a.test", Port: 5071, Weight: 1}})
	relay, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	up, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dns.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	var questions atomic.Int32
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := relay.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if questions.Add(1) == 1 {
				continue // lost
			}
			_ = up.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := up.Write(buf[:n]); err != nil {
				return
			}
			if n, err = up.Read(buf); err != nil {
				return
			}
			_, _ = relay.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	ans, err := DNSClient{Servers: []netip.AddrPort{relay.LocalAddr().(*net.UDPAddr).AddrPort()}}.LookupSRV(ctx, "_sip._udp.app.test")
	if err != nil || records(ans) != "a.test:5071/0/1" {
		t.Fatalf("through a relay that lost the first question: %s, %v", records(ans), err)
	}
	if q := questions.Load(); q != 2 {
		t.Errorf("the relay saw %d questions, want 2 (one lost, one resent)", q)
	}
	if took := time.Since(start); took >= 2*udpResend+time.Second {
		t.Errorf("answered after %v: resent later than after %v", took, udpResend)
	}
}

// TestDNSClientTCP: an answer too large for UDP (80 records) is asked
// again over TCP, whole.
func TestDNSClientTCP(t *testing.T) {
	var srv []dnstest.SRV
	for i := range 80 {
		srv = append(srv, dnstest.SRV{Name: "_http._tcp.big.test", Target: fmt.Sprintf("instance-with-a-long-name-%02d.test", i), Port: 8080, Weight: 1})
	}
	dns := dnstest.StartSRV(t, nil, srv)
	ans, err := DNSClient{Servers: []netip.AddrPort{dns.Addr()}}.LookupSRV(t.Context(), "_http._tcp.big.test")
	if err != nil || len(ans.Records) != 80 {
		t.Errorf("%d records, %v; want 80", len(ans.Records), err)
	}
}

// TestResolvConfServers: the nameserver lines, port 53; others are not.
func TestResolvConfServers(t *testing.T) {
	got := ResolvConfServers(strings.NewReader("# c\nsearch example.com\nnameserver 10.0.0.2\nnameserver ::1\nnameserver bogus\noptions ndots:2\n"))
	if want := []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:53"), netip.MustParseAddrPort("[::1]:53")}; !slices.Equal(got, want) {
		t.Errorf("servers %v, want %v", got, want)
	}
}

package dnstest_test

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"clb/dnstest"
	"clb/membership"
)

// TestSetSRVAnswersThroughout: while SRV records are replaced again and
// again, a client asking all the time is always answered, and once SetSRV
// returns, with the new records (a node of clb that missed one refresh
// would ramp a returning instance from another moment than its peers).
func TestSetSRVAnswersThroughout(t *testing.T) {
	rec := func(port int) []dnstest.SRV {
		return []dnstest.SRV{{Name: "_sip._udp.app.test", Target: "a.test", Port: port, Weight: 1}}
	}
	dns := dnstest.StartSRV(t, map[string][]string{"a.test": {"127.0.0.1"}}, rec(5000))
	c := membership.DNSClient{Servers: []netip.AddrPort{dns.Addr()}}
	lookup := func() (int, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		ans, err := c.LookupSRV(ctx, "_sip._udp.app.test")
		if err != nil || len(ans.Records) != 1 {
			return 0, err
		}
		return int(ans.Records[0].Port), nil
	}
	var asked, failed atomic.Int64
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			default:
			}
			asked.Add(1)
			if port, err := lookup(); err != nil || port == 0 {
				failed.Add(1)
				t.Errorf("while records change: port %d, %v", port, err)
			}
		}
	}()
	for i := 1; i <= 6; i++ {
		dns.SetSRV(rec(5000 + i))
		if port, err := lookup(); port != 5000+i || err != nil {
			t.Errorf("after SetSRV %d: port %d, %v", 5000+i, port, err)
		}
	}
	close(stop)
	<-stopped
	if asked.Load() == 0 {
		t.Error("nothing was asked while the records changed")
	}
	t.Logf("%d look-ups, %d failed", asked.Load(), failed.Load())
}

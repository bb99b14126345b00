package sip

import (
	"net/netip"
	"testing"

	"clb/config"
)

// TestSetInstancesKeepsRules: the instance list and the key rules are
// swapped in apart (instances from the membership fan-out, rules from a
// reload), and neither swap loses the other.
func TestSetInstancesKeepsRules(t *testing.T) {
	at := func(port int) config.Instance {
		return config.Instance{Name: "i", Weight: 100,
			SIP: config.SIPAddr{Endpoint: config.Endpoint{Transport: "udp", Host: "127.0.0.1", Port: port}}}
	}
	rules := []config.Rule{{Header: "X-Account"}}
	p := newProxy(ProxyOptions{Rules: rules, Instances: []config.Instance{at(5071)}}, nil)
	sender := func(port int) *config.Instance {
		return p.settings.Load().byAddr[endpoint{"udp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))}]
	}

	p.setInstances([]config.Instance{at(5072)})
	if sender(5071) != nil || sender(5072) == nil || p.settings.Load().rules.Len() != 1 {
		t.Errorf("after setInstances: %+v", p.settings.Load())
	}
	p.setRules(nil)
	if sender(5072) == nil || p.settings.Load().rules.Len() != 0 {
		t.Errorf("after setRules: %+v", p.settings.Load())
	}
}

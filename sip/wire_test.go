package sip

import "testing"

func TestFieldOf(t *testing.T) {
	for name, want := range map[string]field{
		"Via": fieldVia, "v": fieldVia, "VIA": fieldVia,
		"From": fieldFrom, "f": fieldFrom, "FROM": fieldFrom,
		"To": fieldTo, "t": fieldTo, "tO": fieldTo,
		"Call-ID": fieldCallID, "i": fieldCallID, "call-id": fieldCallID,
		"CSeq": fieldCSeq, "cseq": fieldCSeq,
		"Max-Forwards": fieldMaxForwards, "Route": fieldRoute,
		"Content-Length": fieldContentLength, "l": fieldContentLength,
		"Proxy-Require": fieldProxyRequire,
		"X-CLB-Replica": fieldCLB, "x-clb-anything": fieldCLB,
		// Same lengths as known names, or near them: not theirs.
		"Tx": fieldOther, "Vib": fieldOther, "Cseg": fieldOther, "Fron": fieldOther,
		"Routes": fieldOther, "Record-Route": fieldOther, "Call-IE": fieldOther,
		"Content-Type": fieldOther, "Proxy-Requir": fieldOther, "x-clb-": fieldOther,
		"": fieldOther, "c": fieldOther, "Contact": fieldOther, "Contentlength1": fieldOther,
	} {
		if got := fieldOf([]byte(name)); got != want {
			t.Errorf("fieldOf(%q) = %d, want %d", name, got, want)
		}
	}
}

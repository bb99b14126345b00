package membership

import (
	"encoding/binary"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzParseSRV: no answer, however malformed, makes parseSRV panic; what
// it accepts has targets as clb names instances (lower case, no final
// dot), and a TTL only with records.
func FuzzParseSRV(f *testing.F) {
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("_sip._udp.app.test."), Type: dnsmessage.TypeSRV, Class: dnsmessage.ClassINET}
	answer := func(rcode dnsmessage.RCode, build func(b *dnsmessage.Builder)) []byte {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, Response: true, RCode: rcode})
		_ = b.StartQuestions()
		_ = b.Question(q)
		_ = b.StartAnswers()
		build(&b)
		msg, _ := b.Finish()
		return msg
	}
	f.Add(answer(dnsmessage.RCodeSuccess, func(b *dnsmessage.Builder) {
		_ = b.CNAMEResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5},
			dnsmessage.CNAMEResource{CNAME: dnsmessage.MustNewName("_sip._udp.real.test.")})
		_ = b.SRVResource(dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("_sip._udp.real.test."), Class: dnsmessage.ClassINET, TTL: 30},
			dnsmessage.SRVResource{Priority: 1, Weight: 10, Port: 5060, Target: dnsmessage.MustNewName("A.Test.")})
	}))
	f.Add(answer(dnsmessage.RCodeNameError, func(*dnsmessage.Builder) {}))
	f.Add(answer(dnsmessage.RCodeServerFailure, func(*dnsmessage.Builder) {}))
	f.Add([]byte{0, 7, 0x80})
	f.Fuzz(func(t *testing.T, resp []byte) {
		if len(resp) < 2 {
			return
		}
		ans, err := parseSRV(resp, binary.BigEndian.Uint16(resp), q)
		if err != nil {
			return
		}
		for _, r := range ans.Records {
			if r.Target != strings.ToLower(r.Target) || strings.HasSuffix(r.Target, ".") {
				t.Errorf("target %q", r.Target)
			}
		}
		if len(ans.Records) == 0 && ans.TTL != 0 {
			t.Errorf("TTL %v without records", ans.TTL)
		}
	})
}

package etcdkv

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// watchMessage is a message of the gateway's watch stream with n events of
// clb's admin actions, shaped as etcd 3.4 sends it.
func watchMessage(n int) string {
	var b strings.Builder
	b.WriteString(`{"result":{"header":{"cluster_id":"7801232528081817440","member_id":"13458989633860879742","revision":"4012","raft_term":"2"},"events":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		// /clb/admin/inst-NN = {"state":"disable","at":"2026-12-01T17:36:10.123456789Z"}
		fmt.Fprintf(&b, `{"kv":{"key":"L2NsYi9hZG1pbi9pbnN0LTAw","create_revision":"12","mod_revision":"4012","version":"%d","value":"eyJzdGF0ZSI6ImRpc2FibGUiLCJhdCI6IjIwMjYtMTItMDFUMTc6MzY6MTAuMTIzNDU2Nzg5WiJ9"}}`, i+1)
	}
	b.WriteString("]}}\n")
	return b.String()
}

func TestStreamReadsMessages(t *testing.T) {
	msg := watchMessage(3)
	s := &stream{endpoint: "e", r: newReader(strings.NewReader(msg + "\n" + msg)), max: 1 << 20}
	for range 2 {
		var res WatchResponse
		if err := s.next(&res); err != nil {
			t.Fatal(err)
		}
		if len(res.Events) != 3 || res.Header.Revision != 4012 || res.Events[2].Kv.Version != 3 ||
			string(res.Events[0].Kv.Key) != "/clb/admin/inst-00" || !bytes.HasPrefix(res.Events[0].Kv.Value, []byte(`{"state":"disable"`)) {
			t.Fatalf("%+v", res)
		}
	}
	if err := s.next(new(WatchResponse)); err != io.EOF {
		t.Errorf("after the last message: %v, want EOF", err)
	}
}

// BenchmarkStreamNext is clb's cost of a watch response of 20 admin
// actions (one transaction of bench/etcd-propagation.sh's -batch 20).
func BenchmarkStreamNext(b *testing.B) {
	msg := []byte(watchMessage(20))
	r := bytes.NewReader(msg)
	s := &stream{endpoint: "e", r: newReader(r), max: 1 << 20}
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(msg)
		s.r.Reset(r)
		var res WatchResponse
		if err := s.next(&res); err != nil {
			b.Fatal(err)
		}
	}
}

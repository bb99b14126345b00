package accesslog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func jsonLog(w io.Writer) *zap.Logger {
	return zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(w), zap.InfoLevel))
}

// TestSamplingByKey: a key is logged always or never, and the share of keys
// logged is the sample rate.
func TestSamplingByKey(t *testing.T) {
	l := New(zap.NewNop())
	l.log = jsonLog(io.Discard).Named("access")
	for _, rate := range []float64{0.01, 0.25, 0.5} {
		l.Set(true, rate)
		const keys = 100_000
		logged := 0
		for i := range keys {
			key := fmt.Sprint("user:", i)
			first := l.Check(MsgHTTP, key) != nil
			if again := l.Check(MsgSIP, key) != nil; again != first {
				t.Fatalf("rate %v: key %q logged once and not again", rate, key)
			}
			if first {
				logged++
			}
		}
		if got := float64(logged) / keys; got < rate*0.9 || got > rate*1.1 {
			t.Errorf("rate %v: %.4f of keys logged", rate, got)
		}
	}
	l.Set(true, 1)
	for i := range 1000 {
		if l.Check(MsgHTTP, fmt.Sprint(i)) == nil {
			t.Fatalf("rate 1: key %d not logged", i)
		}
	}
	l.Set(false, 1)
	if l.On() || l.Check(MsgHTTP, "k") != nil {
		t.Error("off: a line would be written")
	}
	var none *Log
	if none.On() || none.Check(MsgHTTP, "k") != nil {
		t.Error("a nil Log would write")
	}
}

// TestLineFields: the fields of each protocol, and no others.
func TestLineFields(t *testing.T) {
	var buf bytes.Buffer
	l := New(jsonLog(&buf))
	l.Set(true, 1)
	var ln Line
	ln.Reset(false)
	ln.Method, ln.Path, ln.Status, ln.Key, ln.Instance, ln.Replica = "GET", []byte("/a b"), 200, "k", "i1", "i2"
	ln.Retried, ln.Outcome, ln.Bytes, ln.Duration = true, "relayed", 42, 1500*time.Microsecond
	ln.Client = netip.MustParseAddrPort("[2001:db8::1]:5060")
	ln.Write(l.Check(MsgHTTP, "k"))
	ln.Reset(true)
	ln.Method, ln.CallID, ln.Status, ln.Outcome, ln.Transport = "INVITE", "c@h", 503, "no_instance", "udp"
	ln.Write(l.Check(MsgSIP, ""))

	want := []map[string]any{
		{"level": "info", "logger": "access", "msg": MsgHTTP, "protocol": "http", "method": "GET", "path": "/a b",
			"status": 200.0, "key": "k", "instance": "i1", "replica": "i2", "retried": true, "outcome": "relayed",
			"bytes": 42.0, "duration": 0.0015, "client": "[2001:db8::1]:5060"},
		// The client stays from one request to the next on a connection.
		{"level": "info", "logger": "access", "msg": MsgSIP, "protocol": "sip", "method": "INVITE", "call_id": "c@h",
			"status": 503.0, "outcome": "no_instance", "transport": "udp", "client": "[2001:db8::1]:5060"},
	}
	dec := json.NewDecoder(&buf)
	for i, w := range want {
		var e map[string]any
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		delete(e, "ts")
		if fmt.Sprint(e) != fmt.Sprint(w) {
			t.Errorf("line %d:\n got %v\nwant %v", i, e, w)
		}
	}
}

// TestLineAllocatesNothing: checking and writing a line allocates nothing
// of clb's own (the JSON encoder's buffers are pooled).
func TestLineAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocations are not counted under the race detector")
	}
	l := New(jsonLog(io.Discard))
	l.Set(true, 1)
	var ln Line
	path := []byte("/cart")
	allocs := testing.AllocsPerRun(1000, func() {
		ln.Reset(false)
		ln.Method, ln.Path, ln.Status, ln.Key, ln.Instance = "GET", path, 200, "user:alice", "inst1"
		ln.Client = netip.MustParseAddrPort("127.0.0.1:40000")
		if ce := l.Check(MsgHTTP, ln.Key); ce != nil {
			ln.Write(ce)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per line", allocs)
	}
	l.Set(true, 0.01)
	if allocs := testing.AllocsPerRun(1000, func() { _ = l.Check(MsgHTTP, "") }); allocs != 0 {
		t.Errorf("%v allocations per keyless check", allocs)
	}
}

// BenchmarkLine is the cost of one request's line alone: Check and Write of
// a full HTTP line as JSON to a discarding writer, with access logging off,
// on, and on with a key sampling leaves out.
func BenchmarkLine(b *testing.B) {
	for _, c := range []struct {
		name   string
		on     bool
		sample float64
	}{{"off", false, 1}, {"on", true, 1}, {"on,not_sampled", true, 1e-9}} {
		b.Run(c.name, func(b *testing.B) {
			l := New(jsonLog(io.Discard))
			l.Set(c.on, c.sample)
			var ln Line
			path := []byte("/cart/items")
			client := netip.MustParseAddrPort("127.0.0.1:40000")
			b.ReportAllocs()
			for b.Loop() {
				if ce := l.Check(MsgHTTP, "user:alice"); ce != nil {
					ln.Reset(false)
					ln.Method, ln.Path, ln.Status, ln.Key, ln.Instance, ln.Replica = "GET", path, 200, "user:alice", "inst1", "inst2"
					ln.Outcome, ln.Bytes, ln.Duration, ln.Client = "relayed", 1234, 350*time.Microsecond, client
					ln.Write(ce)
				}
			}
		})
	}
}

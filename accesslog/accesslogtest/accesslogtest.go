// Package accesslogtest is what the front ends' tests share to read the
// access log: a Log whose JSON lines arrive parsed on a channel, and a check
// of a line's fields. It is for tests only; nothing in clb imports it.
//
// Concurrency: the Log is safe for concurrent use; the channel is read by
// one test goroutine.
package accesslogtest

import (
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"clb/accesslog"
)

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// Lines is an access log, on, whose JSON lines arrive parsed on the
// channel: a line is written after its request is done, so a test waits for
// it rather than for time to pass.
func Lines(t testing.TB) (*accesslog.Log, <-chan map[string]any) {
	t.Helper()
	lines := make(chan map[string]any, 64)
	w := zapcore.AddSync(writerFunc(func(p []byte) (int, error) {
		var e map[string]any
		if err := json.Unmarshal(p, &e); err != nil {
			t.Errorf("access log line %q: %v", p, err)
		}
		lines <- e
		return len(p), nil
	}))
	a := accesslog.New(zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.Lock(w), zap.InfoLevel)))
	a.Set(true, 1)
	return a, lines
}

// Next is the next line, or a failure after wait.
func Next(t testing.TB, lines <-chan map[string]any, wait time.Duration) map[string]any {
	t.Helper()
	select {
	case e := <-lines:
		return e
	case <-time.After(wait):
		t.Fatalf("no access log line within %v", wait)
		return nil
	}
}

// Expect checks a line of protocol ("http" or "sip", with its message msg)
// and its fields; want holds them as JSON decodes them, "" for a field
// that must be absent.
func Expect(t testing.TB, e map[string]any, protocol, msg string, want map[string]any) {
	t.Helper()
	if e["logger"] != "access" || e["msg"] != msg || e["protocol"] != protocol || e["level"] != "info" {
		t.Errorf("line %v: want logger access, msg %q, protocol %s, level info", e, msg, protocol)
	}
	for k, v := range want {
		got, ok := e[k]
		switch {
		case v == "" && ok:
			t.Errorf("%s: %v, want it absent (line %v)", k, got, e)
		case v != "" && got != v:
			t.Errorf("%s: %v, want %v (line %v)", k, got, v, e)
		}
	}
}

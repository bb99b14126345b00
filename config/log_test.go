package config

import (
	"errors"
	"strings"
	"testing"
)

// TestLogSection: log.access is off and log.access_sample 1 by default; the
// file sets them; a sample outside (0, 1] and an unknown key are refused
// with the file, line and key.
func TestLogSection(t *testing.T) {
	c, err := Parse("min.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log != (Log{Access: false, AccessSample: 1}) || Defaults().Log != c.Log {
		t.Errorf("log defaults %+v", c.Log)
	}
	c, err = Parse("log.yaml", []byte(minimal+"log:\n  access: true\n  access_sample: 0.01\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Log != (Log{Access: true, AccessSample: 0.01}) {
		t.Errorf("log %+v", c.Log)
	}
	for _, tc := range []struct {
		name string
		yaml string
		line int
		key  string
		msg  string
	}{
		{name: "sample 0", yaml: "log:\n  access: true\n  access_sample: 0\n", line: 9, key: "log.access_sample", msg: "must be greater than 0 and at most 1"},
		{name: "sample above 1", yaml: "log: {access_sample: 1.5}\n", line: 7, key: "log.access_sample", msg: "must be greater than 0 and at most 1"},
		{name: "not a number", yaml: "log: {access_sample: often}\n", line: 7, key: "log.access_sample", msg: "want a number"},
		{name: "unknown key", yaml: "log:\n  acess: true\n", line: 8, key: "log.acess", msg: "unknown key (known: access, access_sample)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(minimal+tc.yaml))
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error %v, want a *config.Error", err)
			}
			if cerr.Line != tc.line || cerr.Key != tc.key || !strings.Contains(cerr.Msg, tc.msg) {
				t.Errorf("got %v, want bad.yaml:%d: %s: …%s…", err, tc.line, tc.key, tc.msg)
			}
		})
	}
}

package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestEtcd(t *testing.T) {
	c, err := Parse("min.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Etcd != nil {
		t.Errorf("etcd %+v without an etcd: section, want none", c.Etcd)
	}
	c, err = Parse("etcd.yaml", []byte(minimal+"etcd:\n  endpoints: [http://127.0.0.1:2379, https://etcd.example.com:2379]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Etcd == nil || !slices.Equal(c.Etcd.Endpoints, []string{"http://127.0.0.1:2379", "https://etcd.example.com:2379"}) ||
		c.Etcd.Prefix != "/clb/" || c.Etcd.DialTimeout != 2*time.Second {
		t.Errorf("etcd %+v, want the endpoints, prefix /clb/, dial_timeout 2s", c.Etcd)
	}
	c, err = Parse("etcd.yaml", []byte(minimal+"etcd:\n  endpoints: http://127.0.0.1:2379\n  prefix: /a/b/\n  dial_timeout: 500ms\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Etcd.Prefix != "/a/b/" || c.Etcd.DialTimeout != 500*time.Millisecond {
		t.Errorf("etcd %+v, want prefix /a/b/, dial_timeout 500ms", c.Etcd)
	}
}

func TestEtcdBad(t *testing.T) {
	for _, tc := range []struct {
		name string
		yaml string
		line int
		key  string
		msg  string
	}{
		{name: "no endpoint", yaml: "etcd:\n  prefix: /x/\n", line: 7, key: "etcd.endpoints", msg: "at least one"},
		{name: "endpoint without scheme", yaml: "etcd:\n  endpoints: [127.0.0.1:2379]\n", line: 8, key: "etcd.endpoints[0]", msg: "want http://host:port"},
		{name: "endpoint without port", yaml: "etcd:\n  endpoints: [http://127.0.0.1]\n", line: 8, key: "etcd.endpoints[0]", msg: "want http://host:port"},
		{name: "endpoint with a path", yaml: "etcd:\n  endpoints: [http://127.0.0.1:2379/v3]\n", line: 8, key: "etcd.endpoints[0]", msg: "want http://host:port"},
		{name: "prefix without slashes", yaml: "etcd:\n  endpoints: [http://127.0.0.1:2379]\n  prefix: clb\n", line: 9, key: "etcd.prefix", msg: "starts and ends with /"},
		{name: "negative dial timeout", yaml: "etcd:\n  endpoints: [http://127.0.0.1:2379]\n  dial_timeout: -1s\n", line: 9, key: "etcd.dial_timeout", msg: "positive"},
		{name: "unknown key", yaml: "etcd:\n  endpoints: [http://127.0.0.1:2379]\n  prefx: /x/\n", line: 9, key: "etcd.prefx", msg: "unknown key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(minimal+tc.yaml))
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("error %T %v is not a *config.Error", err, err)
			}
			if cerr.Line != tc.line || cerr.Key != tc.key || !strings.Contains(cerr.Msg, tc.msg) {
				t.Errorf("got %v\nwant bad.yaml:%d: %s: …%s…", err, tc.line, tc.key, tc.msg)
			}
		})
	}
}

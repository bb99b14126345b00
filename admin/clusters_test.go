package admin

import (
	"errors"
	"strings"
	"testing"
	"time"

	"clb/balancer"
	"clb/config"
	"clb/loadfactor"
)

// TestClusterWeight: POST /api/v1/clusters/{name}/weight changes a
// cluster's share of new sessions, through the ClusterWeight hook when one
// is set; the status lists each cluster with its weight, share, instances
// and the sessions routed into it in the last minute; a route names its
// cluster.
func TestClusterWeight(t *testing.T) {
	in := instances()
	in[0].Cluster, in[1].Cluster, in[2].Cluster = "blue", "blue", "green"
	bal, err := balancer.New(in, loadfactor.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	var hooked []string
	f := start(t, Options{Balancer: bal, ClusterWeight: func(name string, w int) error {
		hooked = append(hooked, name)
		return bal.SetClusterWeight(name, w)
	}})
	now := time.Now()
	for _, key := range []string{"u1", "u2", "u3", "u1"} {
		f.m.Routed("blue", key, now)
	}
	var c ClusterStatus
	if code, body := f.call("POST", "/api/v1/clusters/blue/weight?value=0", &c); code != 200 {
		t.Fatalf("weight: %d %s", code, body)
	}
	if c.Name != "blue" || c.Weight != 0 || c.Share != 0 || c.Sessions != 3 || strings.Join(c.Instances, ",") != "a,b" {
		t.Errorf("blue after weight 0: %+v", c)
	}
	st := f.status()
	if len(st.Clusters) != 2 || st.Clusters[1].Name != "green" || st.Clusters[1].Share != 1 || st.Clusters[1].Sessions != 0 {
		t.Errorf("status clusters %+v", st.Clusters)
	}
	if byName(st, "c").Cluster != "green" || byName(st, "a").Cluster != "blue" || byName(st, "a").FullShare != 0 {
		t.Errorf("instances %+v", st.Instances)
	}
	var r Route
	if code, body := f.call("GET", "/api/v1/route?key=k", &r); code != 200 || r.Owner != "c" || r.Cluster != "green" {
		t.Errorf("route of a new session: %d %s", code, body)
	}
	if code, body := f.call("GET", "/api/v1/route?key=k&last=a", &r); code != 200 || r.Cluster != "blue" {
		t.Errorf("route of a session of a: %d %s", code, body)
	}
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/api/v1/clusters/purple/weight?value=1", 404},
		{"/api/v1/clusters/blue/weight?value=-1", 400},
		{"/api/v1/clusters/blue/weight?value=x", 400},
		{"/api/v1/clusters/blue/weight", 400},
	} {
		if code, body := f.call("POST", tc.path, nil); code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.path, code, body, tc.code)
		}
	}
	if strings.Join(hooked, ",") != "blue,purple,blue" {
		t.Errorf("hook heard %v", hooked)
	}
	// Like every POST, it needs the admin header.
	f.tok = ""
	if code, _ := f.call("GET", "/api/v1/clusters/blue/weight?value=1", nil); code != 405 {
		t.Errorf("GET of the weight: %d", code)
	}

	single := start(t, Options{})
	if st := single.status(); len(st.Clusters) != 1 || st.Clusters[0].Name != config.DefaultCluster || st.Clusters[0].Weight != 100 {
		t.Errorf("single cluster %+v", st.Clusters)
	}
}

// TestClusterWeightUnavailable: a weight the shared state cannot take (etcd
// out of reach) is answered 503 with its reason, and changes nothing.
func TestClusterWeightUnavailable(t *testing.T) {
	in := instances()
	in[0].Cluster, in[1].Cluster, in[2].Cluster = "blue", "blue", "green"
	bal, err := balancer.New(in, loadfactor.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	f := start(t, Options{Balancer: bal, ClusterWeight: func(string, int) error {
		return Unavailable(errors.New("etcd unreachable: context deadline exceeded"))
	}})
	code, body := f.call("POST", "/api/v1/clusters/blue/weight?value=0", nil)
	if code != 503 || !strings.Contains(body, "etcd unreachable") {
		t.Errorf("got %d %s, want 503 saying etcd is unreachable", code, body)
	}
	if c, _ := bal.Table().Cluster("blue"); c.Weight != 100 {
		t.Errorf("blue's weight %d after a refusal, want 100", c.Weight)
	}
}

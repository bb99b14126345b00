package config

import (
	"strings"
	"testing"
)

const twoClusters = `
listen:
  sip: udp://127.0.0.1:5060
  http: 127.0.0.1:8080
clusters:
  - name: blue
    instances:
      - {name: blue1, sip: 127.0.0.1:5071, http: http://127.0.0.1:8081}
      - {name: blue2, sip: 127.0.0.1:5072, http: http://127.0.0.1:8082}
  - name: green
    weight: 0
    instances:
      - {name: green1, sip: 127.0.0.1:5073, http: http://127.0.0.1:8083}
`

// TestClusters: a clusters: section gives every instance its cluster, in
// Instances as the rest of clb reads them; weights default to 100; the
// top-level instances: list is the one cluster "default".
func TestClusters(t *testing.T) {
	c, err := Parse("c.yaml", []byte(twoClusters))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, inst := range c.Instances {
		got = append(got, inst.Name+"@"+inst.ClusterName())
	}
	if strings.Join(got, " ") != "blue1@blue blue2@blue green1@green" {
		t.Errorf("instances %v", got)
	}
	if w := c.ClusterWeights(); len(w) != 2 || w["blue"] != 100 || w["green"] != 0 {
		t.Errorf("cluster weights %v", w)
	}
	m, err := Parse("m.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if m.Instances[0].ClusterName() != DefaultCluster || len(m.Clusters) != 0 {
		t.Errorf("top-level instance in cluster %q, clusters %v", m.Instances[0].ClusterName(), m.Clusters)
	}
	if w := m.ClusterWeights(); len(w) != 1 || w[DefaultCluster] != 100 {
		t.Errorf("cluster weights %v", w)
	}
}

// TestBadClusters: every error names the cluster's or the instance's place
// in the file.
func TestBadClusters(t *testing.T) {
	for _, tc := range []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{
			name:    "both lists",
			yaml:    twoClusters + "instances: [{name: x, sip: 127.0.0.1:5079}]\n",
			wantErr: `c.yaml:5: clusters: give instances: or clusters:, not both`,
		},
		{
			name:    "name across clusters",
			yaml:    strings.Replace(twoClusters, "green1", "blue1", 1),
			wantErr: `c.yaml:13: clusters[1].instances[0].name: duplicate name "blue1" (also clusters[0].instances[0])`,
		},
		{
			name:    "duplicate cluster",
			yaml:    strings.Replace(twoClusters, "name: green", "name: blue", 1),
			wantErr: `c.yaml:10: clusters[1].name: duplicate name "blue" (also clusters[0])`,
		},
		{
			name:    "bad cluster name",
			yaml:    strings.Replace(twoClusters, "name: green", "name: gr een", 1),
			wantErr: `c.yaml:10: clusters[1].name: "gr een": use only letters`,
		},
		{
			name:    "negative weight",
			yaml:    strings.Replace(twoClusters, "weight: 0", "weight: -1", 1),
			wantErr: `c.yaml:11: clusters[1].weight: -1: must be from 0 to 1000000`,
		},
		{
			name:    "all closed",
			yaml:    strings.Replace(twoClusters, "- name: blue\n", "- name: blue\n    weight: 0\n", 1),
			wantErr: `c.yaml:5: clusters: no cluster of weight > 0 has an instance of weight > 0`,
		},
		{
			name:    "instance address",
			yaml:    strings.Replace(twoClusters, "127.0.0.1:5073", "127.0.0.1:0", 1),
			wantErr: `c.yaml:13: clusters[1].instances[0].sip: udp://127.0.0.1:0: an instance needs a port other than 0`,
		},
		{
			name:    "no instances",
			yaml:    "listen: {sip: udp://127.0.0.1:5060}\nclusters: [{name: a}]\n",
			wantErr: `c.yaml:2: clusters: at least one instance is required`,
		},
		{
			name:    "unknown key",
			yaml:    strings.Replace(twoClusters, "weight: 0", "wieght: 0", 1),
			wantErr: `c.yaml:11: clusters[1].wieght: unknown key`,
		},
		{
			name:    "cluster key on an instance",
			yaml:    strings.Replace(twoClusters, "{name: green1,", "{cluster: blue, name: green1,", 1),
			wantErr: `c.yaml:13: clusters[1].instances[0].cluster: unknown key`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want %q", err, tc.wantErr)
			}
		})
	}
}

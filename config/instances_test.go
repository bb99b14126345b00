package config

import (
	"errors"
	"slices"
	"testing"
)

func sipAt(transport, host string, port int) SIPAddr {
	return SIPAddr{Endpoint{Transport: transport, Host: host, Port: port}}
}

func httpAt(host string, port int) HTTPAddr {
	return HTTPAddr{Endpoint{Transport: "http", Host: host, Port: port}}
}

// TestValidateInstances: instances that no YAML file gave (DNS SRV, etcd)
// are checked as a file's are; each error names the instance and its key.
func TestValidateInstances(t *testing.T) {
	udp := Listen{SIP: []SIPAddr{sipAt("udp", "127.0.0.1", 5060)}}
	a := Instance{Name: "a", SIP: sipAt("udp", "127.0.0.1", 5071), Weight: 100}
	b := Instance{Name: "b", SIP: sipAt("udp", "127.0.0.1", 5072), Weight: 100}
	with := func(inst Instance, f func(*Instance)) Instance { f(&inst); return inst }
	for _, tc := range []struct {
		name      string
		instances []Instance
		listen    Listen
		wantErrs  []string // InstanceError.Error() of each, in order
	}{
		{name: "good", instances: []Instance{a, b}, listen: udp},
		{name: "none", listen: udp, wantErrs: []string{"instances: at least one instance is required"}},
		{
			name: "duplicate name", instances: []Instance{a, with(b, func(i *Instance) { i.Name = "a" })}, listen: udp,
			wantErrs: []string{`instance "a": instances[1].name: duplicate name "a" (also instances[0])`},
		},
		{
			name: "bad name and weight", instances: []Instance{a, with(b, func(i *Instance) { i.Name, i.Weight = "b c", -1 })}, listen: udp,
			wantErrs: []string{
				`instance "b c": instances[1].name: "b c": use only letters, digits, '.', '_' and '-'`,
				`instance "b c": instances[1].weight: -1: must be from 0 to 1000000`,
			},
		},
		{
			name: "nameless", instances: []Instance{with(a, func(i *Instance) { i.Name = "" })}, listen: udp,
			wantErrs: []string{"instances[0].name: required"},
		},
		{
			name: "no address", instances: []Instance{a, with(b, func(i *Instance) { i.SIP = SIPAddr{} })}, listen: udp,
			wantErrs: []string{`instance "b": instances[1]: give a sip address, an http address or both`},
		},
		{
			name: "one address twice, port 0 hides it", listen: udp,
			instances: []Instance{a, with(b, func(i *Instance) { i.SIP = a.SIP }), with(b, func(i *Instance) { i.Name, i.SIP.Port = "c", 0 })},
			wantErrs: []string{
				`instance "b": instances[1].sip: udp://127.0.0.1:5071 is also instances[0].sip`,
				`instance "c": instances[2].sip: udp://127.0.0.1:0: an instance needs a port other than 0`,
			},
		},
		{
			name: "sip on a name", instances: []Instance{with(a, func(i *Instance) { i.SIP.Host = "app1.example.com" })}, listen: udp,
			wantErrs: []string{`instance "a": instances[0].sip: udp://app1.example.com:5071: give an IP address`},
		},
		{
			name: "no listener for its transport", instances: []Instance{with(a, func(i *Instance) { i.SIP.Transport = "tcp" })}, listen: udp,
			wantErrs: []string{`instance "a": instances[0].sip: tcp://127.0.0.1:5071: listen.sip has no tcp listener to reach it from`},
		},
		{
			name: "all of weight 0", instances: []Instance{with(a, func(i *Instance) { i.Weight = 0 })}, listen: udp,
			wantErrs: []string{"instances: every instance has weight 0, so none can take a key"},
		},
		{
			name: "none speaks http", instances: []Instance{a},
			listen:   Listen{HTTP: ListenAddr{Endpoint{Transport: "tcp", Host: "127.0.0.1", Port: 8080}}},
			wantErrs: []string{"listen.http: no instance of weight > 0 has an http address"},
		},
		{
			name: "http only, no listener constraint", instances: []Instance{{Name: "w", HTTP: httpAt("127.0.0.1", 8081), Weight: 1}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateInstances(tc.instances, tc.listen)
			var got []string
			if err != nil {
				for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
					var ie *InstanceError
					if !errors.As(e, &ie) {
						t.Errorf("%v is not an *InstanceError", e)
					}
					got = append(got, e.Error())
				}
			}
			if !slices.Equal(got, tc.wantErrs) {
				t.Errorf("errors\n%q\nwant\n%q", got, tc.wantErrs)
			}
		})
	}
}

// TestValidateInstancesIsLoads: for a file whose instances are wrong,
// ValidateInstances of what the file says finds what Load finds, key by key
// and word for word.
func TestValidateInstancesIsLoads(t *testing.T) {
	const head = "listen: {sip: [udp://127.0.0.1:5060], http: 127.0.0.1:8080}\ninstances:\n"
	for _, instances := range []string{
		"  - {name: a, sip: 127.0.0.1:1, http: http://127.0.0.1:2}\n  - {name: a, sip: 127.0.0.1:1, weight: 2000000}\n",
		"  - {name: 'x y', sip: tcp://127.0.0.1:1}\n  - {name: b}\n",
		"  - {name: a, sip: 127.0.0.1:1, weight: 0}\n",
		"  - {name: a, sip: 127.0.0.1:1}\n",
	} {
		_, loadErr := Parse("f.yaml", []byte(head+instances))
		if loadErr == nil {
			t.Fatalf("Load took\n%s", instances)
		}
		// The same instances, decoded without validation.
		cfg := Defaults()
		d := &decoder{file: "f.yaml", lines: map[string]int{}}
		d.document([]byte(head+instances), &cfg)
		if len(d.errs) > 0 {
			t.Fatalf("decoding: %v", d.err())
		}
		var fromLoad, fromValidate []string
		for _, e := range loadErr.(interface{ Unwrap() []error }).Unwrap() {
			fe := e.(*Error)
			fromLoad = append(fromLoad, fe.Key+": "+fe.Msg)
		}
		for _, e := range ValidateInstances(cfg.Instances, cfg.Listen).(interface{ Unwrap() []error }).Unwrap() {
			ie := e.(*InstanceError)
			fromValidate = append(fromValidate, ie.Key+": "+ie.Msg)
		}
		slices.Sort(fromLoad)
		slices.Sort(fromValidate)
		if !slices.Equal(fromLoad, fromValidate) {
			t.Errorf("for\n%sLoad: %q\nValidateInstances: %q", instances, fromLoad, fromValidate)
		}
	}
}

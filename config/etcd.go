package config

import (
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Etcd is the store all clb nodes share (SPEC section 11): admin actions
// and instance registrations. Absent: this node keeps its state to itself.
type Etcd struct {
	// Endpoints are the etcd members' client URLs, http://host:port or
	// https://host:port. Required.
	Endpoints []string `yaml:"endpoints"`
	// Prefix is where clb's keys live: PREFIX/admin/NAME,
	// PREFIX/instances/NAME. Starts and ends with "/". Default "/clb/".
	Prefix string `yaml:"prefix"`
	// DialTimeout bounds connecting to etcd, and every call clb makes to it.
	// Default 2s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
}

// DefaultEtcdPrefix is etcd.prefix when the file gives none.
const DefaultEtcdPrefix = "/clb/"

// validateEtcd fills etcd's defaults (an optional section, so they cannot
// be in Defaults) and checks it.
func (d *decoder) validateEtcd(e *Etcd) {
	if e == nil {
		return
	}
	if e.Prefix == "" {
		e.Prefix = DefaultEtcdPrefix
	}
	if e.DialTimeout == 0 {
		e.DialTimeout = 2 * time.Second
	}
	if len(e.Endpoints) == 0 {
		d.errorf(d.line("etcd"), "etcd.endpoints", "give at least one etcd client URL, such as http://127.0.0.1:2379")
	}
	for i, ep := range e.Endpoints {
		key := fmt.Sprintf("etcd.endpoints[%d]", i)
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			d.errorf(d.line(key), key, "%q: want http://host:port or https://host:port", ep)
			continue
		}
		if err := checkHost(u.Hostname()); err != nil {
			d.errorf(d.line(key), key, "%q: %v", ep, err)
		}
	}
	if !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") {
		d.errorf(d.line("etcd.prefix"), "etcd.prefix", "%q: want a path that starts and ends with /, such as /clb/", e.Prefix)
	}
	if e.DialTimeout < 0 {
		d.errorf(d.line("etcd.dial_timeout"), "etcd.dial_timeout", "must be positive")
	}
}

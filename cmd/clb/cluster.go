package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"clb/config"
	"clb/instance"
)

// cluster is clb (in this process) in front of sample instances (processes
// of their own, so that one can be killed), all on loopback free ports: what
// clb demo shows and the end-to-end tests drive.
type cluster struct {
	opts clusterOptions
	dir  string

	node    *node
	cancel  context.CancelFunc
	stopped chan error
	sip     string // clb's SIP listener, host:port
	http    string // clb's HTTP front end, host:port
	admin   string // clb's admin API, http://host:port

	mu    sync.Mutex
	procs map[string]*instanceProc
}

type clusterOptions struct {
	names []string
	// groups, if set, puts the instances in clusters (a clusters: section)
	// instead of names: the sample instances of each cluster, by name.
	groups []clusterGroup
	// exe and env run a sample instance: exe with "instance" and its flags.
	exe string
	env []string
	// yaml is the clb configuration's health, loadfactor and keys
	// sections; listen and instances are the cluster's.
	yaml string
	// ring is the instances' ring time.
	ring time.Duration
	// stderr gets the instances' logs; nil drops them.
	stderr io.Writer
}

// clusterGroup is one cluster of the configuration.
type clusterGroup struct {
	name   string
	weight int
	names  []string
}

// instanceProc is one sample instance process.
type instanceProc struct {
	cmd     *exec.Cmd
	started instance.Started
	done    chan error
}

// startCluster starts the instances, then clb configured with their
// addresses, then tells the instances where clb's admin API is.
func startCluster(opts clusterOptions, log *zap.Logger) (*cluster, error) {
	dir, err := os.MkdirTemp("", "clb-cluster-")
	if err != nil {
		return nil, err
	}
	c := &cluster{opts: opts, dir: dir, procs: map[string]*instanceProc{}}
	var stdins []io.WriteCloser
	var yaml strings.Builder
	yaml.WriteString("listen:\n  sip: [udp://127.0.0.1:0]\n  http: 127.0.0.1:0\n  admin: 127.0.0.1:0\n")
	groups, indent := opts.groups, "  "
	if len(groups) == 0 {
		groups = []clusterGroup{{names: opts.names}}
		yaml.WriteString("instances:\n")
	} else {
		yaml.WriteString("clusters:\n")
		indent = "      "
	}
	for _, g := range groups {
		if g.name != "" {
			fmt.Fprintf(&yaml, "  - name: %s\n    weight: %d\n    instances:\n", g.name, g.weight)
		}
		for _, name := range g.names {
			p, stdin, err := c.startInstance(name, "127.0.0.1:0", "127.0.0.1:0", "-")
			if err != nil {
				c.close()
				return nil, err
			}
			stdins = append(stdins, stdin)
			fmt.Fprintf(&yaml, "%s- {name: %s, sip: %s, http: %s}\n", indent, name, p.started.SIP, p.started.HTTP)
		}
	}
	yaml.WriteString(opts.yaml)
	path := filepath.Join(dir, "clb.yaml")
	if err := os.WriteFile(path, []byte(yaml.String()), 0o644); err != nil {
		c.close()
		return nil, err
	}
	cfg, err := config.Load(path)
	if err != nil {
		c.close()
		return nil, err
	}
	c.node, err = newNode(cfg, log)
	if err != nil {
		c.close()
		return nil, err
	}
	c.sip = strings.TrimPrefix(c.node.sip.Listeners()[0], "udp://")
	c.http = c.node.http.Addr()
	c.admin = "http://" + c.node.admin.Addr()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.stopped = cancel, make(chan error, 1)
	go func() { c.stopped <- c.node.run(ctx, nil) }()
	for _, stdin := range stdins {
		_, _ = io.WriteString(stdin, c.admin+"\n")
		stdin.Close()
	}
	return c, nil
}

// startInstance starts the instance name on the given addresses, with
// clb's admin API URL (or "-": told on standard input, returned).
func (c *cluster) startInstance(name, sipAddr, httpAddr, admin string) (*instanceProc, io.WriteCloser, error) {
	args := []string{"instance", "-name", name, "-sip", sipAddr, "-http", httpAddr, "-clb", admin, "-log", "warn"}
	if c.opts.ring > 0 {
		args = append(args, "-ring", c.opts.ring.String())
	}
	cmd := exec.Command(c.opts.exe, args...)
	cmd.Env = append(os.Environ(), c.opts.env...)
	cmd.Stderr = c.opts.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	p := &instanceProc{cmd: cmd, done: make(chan error, 1)}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		close(line)
		_, _ = io.Copy(io.Discard, stdout)
		p.done <- cmd.Wait()
	}()
	select {
	case l, ok := <-line:
		if !ok || json.Unmarshal([]byte(l), &p.started) != nil || p.started.HTTP == "" {
			_ = cmd.Process.Kill()
			return nil, nil, fmt.Errorf("instance %s did not start: %q", name, l)
		}
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		return nil, nil, fmt.Errorf("instance %s did not start within 20 s", name)
	}
	c.mu.Lock()
	c.procs[name] = p
	c.mu.Unlock()
	return p, stdin, nil
}

// kill ends the instance name with SIGKILL: it loses everything it held.
func (c *cluster) kill(name string) error {
	c.mu.Lock()
	p := c.procs[name]
	delete(c.procs, name)
	c.mu.Unlock()
	if p == nil {
		return fmt.Errorf("instance %s is not running", name)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-p.done
	return nil
}

// restart starts the instance name again on the addresses it had.
func (c *cluster) restart(name string, was instance.Started) error {
	_, stdin, err := c.startInstance(name, strings.TrimPrefix(was.SIP, "udp://"), strings.TrimPrefix(was.HTTP, "http://"), c.admin)
	if stdin != nil {
		stdin.Close()
	}
	return err
}

// started is the addresses of the instance name.
func (c *cluster) started(name string) instance.Started {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.procs[name]; p != nil {
		return p.started
	}
	return instance.Started{}
}

// close stops clb and the instances (SIGTERM, then SIGKILL after 5 s).
func (c *cluster) close() error {
	var first error
	if c.cancel != nil {
		c.cancel()
		first = <-c.stopped
	}
	c.mu.Lock()
	procs := c.procs
	c.procs = map[string]*instanceProc{}
	c.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case err := <-p.done:
			var exit *exec.ExitError
			if err != nil && !errors.As(err, &exit) && first == nil {
				first = err
			}
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	_ = os.RemoveAll(c.dir)
	return first
}

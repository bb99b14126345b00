//go:build linux

// Command etcdprop measures how fast clb nodes that share etcd (SPEC
// section 11) take up a change, for bench/etcd-propagation.sh. It is a
// benchmark tool, not part of clb and not a test; Linux only, as the
// benches are (its children die with it: Pdeathsig).
//
//	etcdprop -clb ./clb [-nodes 3] [-actions 100] [-rates 500,1000,2000,0] [-batch 1] [-d 3s]
//
// It starts one etcd member and several clb nodes (the clb binary given)
// on free loopback ports, before instances that are never probed (health
// off), then measures:
//
//   - propagation: an admin action (disable, then enable, in turn) posted
//     to one node's admin API (each node in turn), to every node routing
//     by it: each node is long-polled (GET /api/v1/status?wait=&version=),
//     which answers as its routing table changes. Median and max over
//     -actions actions.
//
//   - watch load: admin actions written straight into etcd at a given rate
//     (each toggles one of the instances), then a marker action; a node
//     has applied everything before the marker once its status shows the
//     marker (the watch applies actions in revision order). The lag is
//     from the marker's write to the last node showing it; a node that
//     keeps up shows it within milliseconds whatever the rate.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func main() {
	clb := flag.String("clb", "", "the clb binary (required)")
	etcdBin := flag.String("etcd", "etcd", "the etcd binary")
	nodes := flag.Int("nodes", 3, "clb nodes")
	instances := flag.Int("instances", 20, "instances in the nodes' file (at least -batch + 2)")
	actions := flag.Int("actions", 100, "admin actions timed for propagation")
	rates := flag.String("rates", "500,1000,2000,0", "watch load: writes per second, comma-separated; 0: as fast as -writers can")
	writers := flag.Int("writers", 32, "watch load: writes in flight at most")
	batch := flag.Int("batch", 1, "watch load: actions per write (one etcd transaction, each on its own instance)")
	d := flag.Duration("d", 3*time.Second, "watch load: how long each rate is written")
	flag.Parse()
	if *clb == "" || *batch < 1 || *instances < *batch+2 {
		flag.Usage()
		os.Exit(2)
	}
	b, err := start(*clb, *etcdBin, *nodes, *instances)
	if b != nil {
		defer b.stop()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "etcdprop:", err)
		os.Exit(1)
	}
	if err := b.propagation(*actions); err != nil {
		fmt.Fprintln(os.Stderr, "etcdprop: propagation:", err)
		os.Exit(1)
	}
	for _, r := range strings.Split(*rates, ",") {
		rate, err := strconv.Atoi(strings.TrimSpace(r))
		if err != nil || rate < 0 {
			fmt.Fprintf(os.Stderr, "etcdprop: -rates: %q\n", r)
			os.Exit(2)
		}
		if err := b.watchLoad(rate, *batch, *writers, *d); err != nil {
			fmt.Fprintln(os.Stderr, "etcdprop: watch load:", err)
			os.Exit(1)
		}
	}
}

// bench is the processes of one run.
type bench struct {
	dir       string
	etcdURL   string
	etcd      *exec.Cmd
	nodes     []*exec.Cmd
	admins    []string // each node's admin API, host:port
	instances []string
	client    *clientv3.Client
	http      *http.Client
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs etcd and the nodes, and returns once every node has reached
// etcd.
func start(clb, etcdBin string, nodes, instances int) (*bench, error) {
	dir, err := os.MkdirTemp("", "etcdprop-")
	if err != nil {
		return nil, err
	}
	b := &bench{dir: dir, http: &http.Client{Timeout: 30 * time.Second}}
	cp, err1 := freePort()
	pp, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		return b, err
	}
	b.etcdURL = fmt.Sprintf("http://127.0.0.1:%d", cp)
	peer := fmt.Sprintf("http://127.0.0.1:%d", pp)
	b.etcd = exec.Command(etcdBin, "--data-dir", filepath.Join(dir, "etcd"), "--name", "b",
		"--listen-client-urls", b.etcdURL, "--advertise-client-urls", b.etcdURL,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "b="+peer, "--log-level", "warn")
	b.etcd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := b.etcd.Start(); err != nil {
		return b, fmt.Errorf("etcd: %w", err)
	}
	b.client, err = clientv3.New(clientv3.Config{Endpoints: []string{b.etcdURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return b, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		// The member serves once a Get answers.
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		_, err := b.client.Get(cctx, "/clb/")
		ccancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return b, fmt.Errorf("etcd did not serve within 30 s: %v", err)
		}
	}
	var list strings.Builder
	for i := range instances {
		name := fmt.Sprintf("i%d", i)
		b.instances = append(b.instances, name)
		fmt.Fprintf(&list, "  - {name: %s, http: http://127.0.0.1:%d}\n", name, 10000+i)
	}
	for i := range nodes {
		hp, err1 := freePort()
		ap, err2 := freePort()
		if err := errors.Join(err1, err2); err != nil {
			return b, err
		}
		admin := fmt.Sprintf("127.0.0.1:%d", ap)
		yaml := fmt.Sprintf("listen: {http: 127.0.0.1:%d, admin: %s}\nhealth: {active: false}\n"+
			"loadfactor: {start: 0.25, increase: 0.25, period: 1h}\netcd: {endpoints: [%s], dial_timeout: 2s}\ninstances:\n%s",
			hp, admin, b.etcdURL, list.String())
		path := filepath.Join(dir, fmt.Sprintf("node%d.yaml", i))
		if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
			return b, err
		}
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("node%d.log", i)))
		if err != nil {
			return b, err
		}
		cmd := exec.Command(clb, "run", "-config", path)
		cmd.Stderr = logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return b, err
		}
		logf.Close()
		b.nodes, b.admins = append(b.nodes, cmd), append(b.admins, admin)
	}
	for _, a := range b.admins {
		for {
			st, err := b.status(a, 0)
			if err == nil && st.Etcd != nil && st.Etcd.Reachable {
				break
			}
			if ctx.Err() != nil {
				return b, fmt.Errorf("node %s did not reach etcd within 30 s: %v %+v", a, err, st.Etcd)
			}
			time.Sleep(50 * time.Millisecond) // start-up, not a measurement
		}
	}
	return b, nil
}

// stop ends the processes it started, by their pids.
func (b *bench) stop() {
	if b.client != nil {
		b.client.Close()
	}
	for _, c := range b.nodes {
		_ = c.Process.Signal(syscall.SIGTERM)
		_ = c.Wait()
	}
	if b.etcd != nil && b.etcd.Process != nil {
		_ = b.etcd.Process.Kill()
		_ = b.etcd.Wait()
	}
	_ = os.RemoveAll(b.dir)
}

// status is the part of GET /api/v1/status the bench reads.
type status struct {
	Version   uint64 `json:"version"`
	Instances []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	} `json:"instances"`
	Etcd *struct {
		Reachable bool  `json:"reachable"`
		Revision  int64 `json:"revision"`
	} `json:"etcd"`
}

func (st status) state(name string) string {
	for _, i := range st.Instances {
		if i.Name == name {
			return i.State
		}
	}
	return ""
}

// status asks a node; with version > 0 it long-polls until the table is
// past it (at most 5 s).
func (b *bench) status(admin string, version uint64) (status, error) {
	u := "http://" + admin + "/api/v1/status"
	if version > 0 {
		u += fmt.Sprintf("?wait=5s&version=%d", version)
	}
	var st status
	res, err := b.http.Get(u)
	if err != nil {
		return st, err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		body, _ := io.ReadAll(res.Body)
		return st, fmt.Errorf("%s: %s %s", u, res.Status, body)
	}
	return st, json.NewDecoder(res.Body).Decode(&st)
}

// until long-polls every node until ok holds of its status, and returns
// when each did (the zero time for a node that did not within 10 s).
func (b *bench) until(ok func(status) bool) []time.Time {
	seen := make([]time.Time, len(b.admins))
	var wg sync.WaitGroup
	for i, a := range b.admins {
		wg.Go(func() {
			deadline := time.Now().Add(10 * time.Second)
			var v uint64
			for time.Now().Before(deadline) {
				st, err := b.status(a, v)
				if err != nil {
					return
				}
				if ok(st) {
					seen[i] = time.Now()
					return
				}
				v = st.Version
			}
		})
	}
	wg.Wait()
	return seen
}

// propagation times n admin actions from the POST to the last node routing
// by it.
func (b *bench) propagation(n int) error {
	const name = "i0"
	var took, post []time.Duration
	for k := range n {
		action, want := "disable", "disabled"
		if k%2 == 1 {
			action, want = "enable", "ramping"
		}
		// The long polls start before the action.
		var seen []time.Time
		ready := make(chan struct{})
		done := make(chan struct{})
		go func() {
			close(ready)
			seen = b.until(func(st status) bool { return st.state(name) == want })
			close(done)
		}()
		<-ready
		req, _ := http.NewRequest("POST", "http://"+b.admins[k%len(b.admins)]+"/api/v1/instances/"+name+"/"+action, nil)
		req.Header.Set("X-CLB-Admin", "1")
		t0 := time.Now()
		res, err := b.http.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		answered := time.Now()
		if res.StatusCode != 200 {
			return fmt.Errorf("%s %s: %s", action, name, res.Status)
		}
		<-done
		last := t0
		for i, s := range seen {
			if s.IsZero() {
				return fmt.Errorf("node %s did not apply %s within 10 s", b.admins[i], action)
			}
			if s.After(last) {
				last = s
			}
		}
		took, post = append(took, last.Sub(t0)), append(post, answered.Sub(t0))
	}
	fmt.Printf("propagation: %d admin actions (disable/enable, posted to each of %d nodes in turn), POST to every node routing by it:\n"+
		"  median %v  p90 %v  max %v   (the POST itself: median %v, max %v)\n",
		n, len(b.admins), pct(took, 50), pct(took, 90), pct(took, 100), pct(post, 50), pct(post, 100))
	return nil
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)].Round(10 * time.Microsecond)
}

// watchLoad writes rate actions a second straight into etcd for d (as fast
// as writers allow with rate 0), each toggling one instance, then a marker,
// and reports how soon after the marker's write every node had applied it.
func (b *bench) watchLoad(rate, batch, writers int, d time.Duration) error {
	ctx := context.Background()
	var written, failed atomic.Int64
	sem := make(chan struct{}, writers)
	var wg sync.WaitGroup
	// put writes an action for each of names in one transaction: one
	// revision, one watch response, an event per name.
	put := func(state string, names ...string) {
		v, _ := json.Marshal(map[string]any{"state": state, "at": time.Now().UTC().Format(time.RFC3339Nano)})
		var ops []clientv3.Op
		for _, name := range names {
			ops = append(ops, clientv3.OpPut("/clb/admin/"+name, string(v)))
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := b.client.Txn(cctx).Then(ops...).Commit(); err != nil {
			failed.Add(int64(len(names)))
			return
		}
		written.Add(int64(len(names)))
	}
	// The marker's instance is the last one, which the load leaves alone.
	load := b.instances[1 : len(b.instances)-1]
	marker := b.instances[len(b.instances)-1]
	start := time.Now()
	end := start.Add(d)
	for k := 0; ; k++ {
		if rate > 0 {
			due := start.Add(time.Duration(k) * time.Second / time.Duration(rate))
			if due.After(end) {
				break
			}
			time.Sleep(time.Until(due)) // pacing the writer
		} else if time.Now().After(end) {
			break
		}
		// Write k touches load[k*batch % len …] onwards; a pass over the
		// load's instances disables them, the next enables them.
		first := k * batch
		state := "disable"
		if (first/len(load))%2 == 1 {
			state = "enable"
		}
		names := make([]string, batch)
		for j := range names {
			names[j] = load[(first+j)%len(load)]
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			put(state, names...)
		})
	}
	wg.Wait()
	wrote := time.Since(start)
	// The marker alternates, so that each run changes it.
	st, err := b.status(b.admins[0], 0)
	if err != nil {
		return err
	}
	mstate, want := "disable", "disabled"
	if st.state(marker) == "disabled" {
		mstate, want = "enable", "ramping"
	}
	t0 := time.Now()
	put(mstate, marker)
	seen := b.until(func(st status) bool { return st.state(marker) == want })
	last := t0
	for i, s := range seen {
		if s.IsZero() {
			return fmt.Errorf("node %s did not apply the marker within 10 s", b.admins[i])
		}
		if s.After(last) {
			last = s
		}
	}
	label := strconv.Itoa(rate) + "/s"
	if rate == 0 {
		label = "max"
	}
	n := float64(written.Load())
	fmt.Printf("watch load %-7s %6.0f actions written in %v (%.0f/s, %d failed); every node had applied them all %v after the last write (%.0f/s applied)\n",
		label, n, wrote.Round(time.Millisecond), n/wrote.Seconds(), failed.Load(), last.Sub(t0).Round(10*time.Microsecond),
		n/last.Sub(start).Seconds())
	return nil
}

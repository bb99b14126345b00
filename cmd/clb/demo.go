package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"clb/admin"
	"clb/instance"
)

// fastYAML makes health checks and ramps take a second or so.
const fastYAML = `health: {interval: 250ms, timeout: 250ms, rise: 2, fall: 2}
loadfactor: {start: 0.25, increase: 0.25, period: 1s}
`

// demoYAML is the demo's clb configuration beyond listeners and instances:
// fast health checks and ramp so that the story takes seconds, and the
// converged key rules of the example (a user's dialog and web session share
// a key).
const demoYAML = fastYAML + `keys:
  sip:
    - {header: From, uri_user: true, prefix: "user:"}
  http:
    - {query: user, prefix: "user:"}
`

// demoUser is one user of the demo: a SIP dialog and a web session (a
// counter and a task list) under one key.
type demoUser struct {
	name    string
	call    *call
	web     *http.Client
	counter int64
	tasks   int
	home    string // where the user landed first
	lost    []string
}

// runDemo is clb demo: clb and four sample instances on loopback, a story
// of sessions surviving the loss and return of an instance, told on stdout.
// It exits 0 only if no session lost anything.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("clb demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stay := fs.Bool("stay", false, "keep clb and the instances running after the story, until Ctrl-C, to look at the status page")
	verbose := fs.Bool("v", false, "show clb's and the instances' logs on standard error")
	upgrade := fs.Bool("upgrade", false, "tell the online upgrade instead: two clusters, blue closed to new sessions while its own finish on it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: clb demo [-upgrade] [-stay] [-v]")
		return 2
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "clb demo: %v\n", err)
		return 1
	}
	log := zap.NewNop()
	var instLog io.Writer
	if *verbose {
		enc := zap.NewDevelopmentEncoderConfig()
		log = zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.Lock(zapcore.AddSync(stderr)), zap.InfoLevel))
		instLog = stderr
	}
	d := &demo{out: stdout}
	opts := clusterOptions{names: []string{"inst1", "inst2", "inst3", "inst4"}, exe: exe, yaml: demoYAML, stderr: instLog}
	if *upgrade {
		opts.names, opts.groups = nil, upgradeGroups
		d.say("Starting clb and two clusters of two sample instances (clb-instance) on loopback…")
	} else {
		d.say("Starting clb and four sample instances (clb-instance) on loopback…")
	}
	c, err := startCluster(opts, log)
	if err != nil {
		fmt.Fprintf(stderr, "clb demo: %v\n", err)
		return 1
	}
	d.c = c
	defer func() {
		if err := c.close(); err != nil {
			fmt.Fprintf(stderr, "clb demo: stopping: %v\n", err)
		}
	}()
	ok := false
	if *upgrade {
		ok = d.runUpgrade()
	} else {
		ok = d.run()
	}
	if *stay {
		d.say("\nclb and the instances keep running: status page %s/ — Ctrl-C to stop.", c.admin)
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		<-ctx.Done()
		stop()
	}
	if !ok {
		return 1
	}
	return 0
}

type demo struct {
	out   io.Writer
	c     *cluster
	users []*demoUser
}

func (d *demo) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

// run tells the story; false if anything was lost or went wrong.
func (d *demo) run() bool {
	c := d.c
	d.say("  clb: SIP udp://%s, HTTP http://%s, admin %s", c.sip, c.http, c.admin)
	d.say("  status page: %s/ (clb demo -stay keeps it up after the story)", c.admin)
	ph, err := newPhone(c.sip)
	if err != nil {
		d.say("clb demo: %v", err)
		return false
	}
	defer ph.close()
	ctx := context.Background()

	d.say("\n1. Eight users each open a SIP dialog and a web session. The key rules give")
	d.say("   both the key user:NAME, so a user's dialog and session land on one instance.")
	for _, name := range []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"} {
		u := &demoUser{name: name, call: ph.newCall(name), web: &http.Client{Timeout: 10 * time.Second}}
		d.users = append(d.users, u)
		if x := u.call.invite(ctx); !x.ok() {
			u.lost = append(u.lost, fmt.Sprintf("INVITE answered %d", x.code))
			continue
		}
		web1 := d.increment(u)
		web2 := d.addTask(u, "call "+name+" back")
		u.home = u.call.servedBy
		r := d.route(u)
		d.say("   %-6s dialog on %s, web session on %s (counter %d, %d task); replica partner %s",
			u.name, u.home, sameOr(web1, web2), u.counter, u.tasks, r.Replica)
	}
	victim := d.busiest()
	var theirs []string
	for _, u := range d.users {
		if u.home == victim {
			theirs = append(theirs, u.name)
		}
	}

	d.say("\n2. %s dies: SIGKILL, with the sessions of %s in its memory.", victim, strings.Join(theirs, ", "))
	was := c.started(victim)
	if err := c.kill(victim); err != nil {
		d.say("clb demo: %v", err)
		return false
	}
	killed := time.Now()
	if err := d.waitState(victim, "down", 10*time.Second); err != nil {
		d.say("clb demo: %v", err)
		return false
	}
	d.say("   clb's health checks mark it down %.1f s later. Every user goes on:", time.Since(killed).Seconds())
	for _, u := range d.users {
		d.step(ctx, u, victim, "after")
	}

	d.say("\n3. %s is started again, empty. clb ramps it up by its load factor:", victim)
	if err := c.restart(victim, was); err != nil {
		d.say("clb demo: %v", err)
		return false
	}
	factors, err := d.ramp(victim)
	if err != nil {
		d.say("clb demo: %v", err)
		return false
	}
	d.say("   load factor %s; its sessions come home, fetched from their replica partners:", factors)
	for _, u := range d.users {
		d.step(ctx, u, victim, "back")
	}

	d.say("\n4. Everyone hangs up.")
	ended := 0
	for _, u := range d.users {
		if x := u.call.bye(ctx); x.ok() {
			ended++
		} else {
			u.lost = append(u.lost, fmt.Sprintf("BYE answered %d", x.code))
		}
	}
	d.say("   %d of %d dialogs ended with 200 to BYE.", ended, len(d.users))

	lost := 0
	for _, u := range d.users {
		if len(u.lost) > 0 {
			lost++
			d.say("   LOST: %s: %s", u.name, strings.Join(u.lost, "; "))
		}
	}
	d.say("\nResult: %d users, %d dialogs and %d web sessions through the loss and return of %s: %d lost.",
		len(d.users), len(d.users), len(d.users), victim, lost)
	return lost == 0
}

// step makes one round of a user's traffic (re-INVITE, increment, task
// list) and says where it went and what state it found.
func (d *demo) step(ctx context.Context, u *demoUser, victim, when string) {
	if len(u.lost) > 0 {
		return
	}
	before := u.counter
	x := u.call.reinvite(ctx)
	web := d.increment(u)
	tasks := d.listTasks(u)
	if !x.ok() {
		u.lost = append(u.lost, fmt.Sprintf("re-INVITE answered %d", x.code))
	}
	if len(u.lost) > 0 {
		return
	}
	where := "stays on " + x.servedBy
	switch {
	case u.home == victim && when == "after":
		where = "moves to " + x.servedBy + " (its replica partner)"
	case u.home == victim && when == "back":
		where = "is back on " + x.servedBy
	}
	together := ""
	if web != x.servedBy {
		together = fmt.Sprintf(" (web session on %s!)", web)
		u.lost = append(u.lost, "dialog and web session apart")
	}
	d.say("   %-6s %s%s: re-INVITE 200, counter %d → %d, %d task", u.name, where, together, before, u.counter, tasks)
}

// busiest is the instance with the most users (the first by name on a tie).
func (d *demo) busiest() string {
	n := map[string]int{}
	for _, u := range d.users {
		n[u.home]++
	}
	names := make([]string, 0, len(n))
	for name := range n {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		return n[names[i]] > n[names[j]] || n[names[i]] == n[names[j]] && names[i] < names[j]
	})
	return names[0]
}

// web sends a request of u's web session and decodes the answer into out;
// it returns the instance that answered.
func (d *demo) web(u *demoUser, method, path, body string, out any) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	req, _ := http.NewRequest(method, "http://"+d.c.http+path+sep+"user="+url.QueryEscape(u.name), strings.NewReader(body))
	res, err := u.web.Do(req)
	if err != nil {
		u.lost = append(u.lost, fmt.Sprintf("%s %s: %v", method, path, err))
		return ""
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		u.lost = append(u.lost, fmt.Sprintf("%s %s: %s %s", method, path, res.Status, strings.TrimSpace(string(b))))
		return res.Header.Get("X-CLB-Served-By")
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		u.lost = append(u.lost, fmt.Sprintf("%s %s: %v", method, path, err))
	}
	return res.Header.Get("X-CLB-Served-By")
}

// increment adds one to u's counter, checking it continues from the last
// value (a reset would be a lost session).
func (d *demo) increment(u *demoUser) string {
	var got instance.Counter
	by := d.web(u, "PUT", fmt.Sprintf("/counter?next=%d", u.counter+1), "", &got)
	if got.Counter == u.counter+1 {
		u.counter = got.Counter
	} else if len(u.lost) == 0 {
		u.lost = append(u.lost, fmt.Sprintf("counter %d, want %d", got.Counter, u.counter+1))
	}
	return by
}

func (d *demo) addTask(u *demoUser, task string) string {
	var got instance.Tasks
	by := d.web(u, "POST", "/tasks", task, &got)
	u.tasks = len(got.Tasks)
	return by
}

func (d *demo) listTasks(u *demoUser) int {
	var got instance.Tasks
	d.web(u, "GET", "/tasks", "", &got)
	if len(got.Tasks) != u.tasks && len(u.lost) == 0 {
		u.lost = append(u.lost, fmt.Sprintf("%d tasks, want %d", len(got.Tasks), u.tasks))
	}
	return len(got.Tasks)
}

// adminGet decodes a GET of clb's admin API.
func (d *demo) adminGet(path string, out any) error {
	client := http.Client{Timeout: 70 * time.Second}
	res, err := client.Get(d.c.admin + path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, res.Status)
	}
	return json.NewDecoder(res.Body).Decode(out)
}

func (d *demo) route(u *demoUser) admin.Route {
	var r admin.Route
	_ = d.adminGet("/api/v1/route?key="+url.QueryEscape("user:"+u.name), &r)
	return r
}

// watchStatus long-polls clb's status, giving each answer to f until f says
// done or within passes.
func (d *demo) watchStatus(within time.Duration, f func(admin.InstanceStatus) bool, name string) error {
	deadline := time.Now().Add(within)
	var st admin.Status
	path := "/api/v1/status"
	for {
		if err := d.adminGet(path, &st); err != nil {
			return err
		}
		for _, i := range st.Instances {
			if i.Name == name && f(i) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not there within %v", name, within)
		}
		path = fmt.Sprintf("/api/v1/status?wait=5s&version=%d", st.Version)
	}
}

func (d *demo) waitState(name, state string, within time.Duration) error {
	return d.watchStatus(within, func(i admin.InstanceStatus) bool { return i.State == state }, name)
}

// ramp follows name's load factor until it is up, and returns the steps.
func (d *demo) ramp(name string) (string, error) {
	var steps []string
	err := d.watchStatus(30*time.Second, func(i admin.InstanceStatus) bool {
		if i.State == "ramping" || i.State == "up" {
			s := fmt.Sprintf("%.2f", i.LoadFactor)
			if len(steps) == 0 || steps[len(steps)-1] != s {
				steps = append(steps, s)
			}
		}
		return i.State == "up"
	}, name)
	return strings.Join(steps, " → "), err
}

func sameOr(a, b string) string {
	if a == b {
		return a
	}
	return a + " and " + b
}

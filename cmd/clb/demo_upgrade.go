package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"time"

	"clb/admin"
)

// upgradeGroups are clb demo -upgrade's clusters: blue runs the old
// version and takes every new session; green, the new one, is closed.
var upgradeGroups = []clusterGroup{
	{name: "blue", weight: 100, names: []string{"blue1", "blue2"}},
	{name: "green", weight: 0, names: []string{"green1", "green2"}},
}

// runUpgrade tells the online upgrade of SPEC section 13: blue closed to
// new sessions, which start on green, while blue's own sessions finish on
// blue (failing over inside blue when one of its instances dies). False if
// anything was lost or went wrong.
func (d *demo) runUpgrade() bool {
	c := d.c
	d.say("  clb: SIP udp://%s, HTTP http://%s, admin %s", c.sip, c.http, c.admin)
	d.say("  status page: %s/ (clb demo -upgrade -stay keeps it up after the story)", c.admin)
	d.say("  clusters: blue (blue1, blue2; weight 100) runs the old version, green (green1, green2; weight 0) the new one.")
	ph, err := newPhone(c.sip)
	if err != nil {
		d.say("clb demo: %v", err)
		return false
	}
	defer ph.close()
	ctx := context.Background()
	newUser := func(name string) *demoUser {
		jar, _ := cookiejar.New(nil) // a browser's: CLBROUTE keeps the session in its cluster
		return &demoUser{name: name, call: ph.newCall(name), web: &http.Client{Jar: jar, Timeout: 10 * time.Second}}
	}
	start := func(u *demoUser) {
		if x := u.call.invite(ctx); !x.ok() {
			u.lost = append(u.lost, fmt.Sprintf("INVITE answered %d", x.code))
			return
		}
		web := d.increment(u)
		u.home = u.call.servedBy
		if web != u.home {
			u.lost = append(u.lost, fmt.Sprintf("dialog on %s, web session on %s", u.home, web))
		}
	}

	d.say("\n1. Six users open a SIP dialog and a web session: all on blue, the only open cluster.")
	var blue []*demoUser
	for _, name := range []string{"alice", "bob", "carol", "dave", "erin", "frank"} {
		u := newUser(name)
		blue = append(blue, u)
		start(u)
		d.say("   %-6s dialog and web session on %s (counter %d); replica partner %s", u.name, u.home, u.counter, d.route(u).Replica)
	}

	d.say("\n2. The operator closes blue and opens green:")
	for _, step := range []string{"blue/weight?value=0", "green/weight?value=100"} {
		path := "/api/v1/clusters/" + step
		if err := d.adminPost(path); err != nil {
			d.say("clb demo: %v", err)
			return false
		}
		d.say("   POST %s", path)
	}
	d.say("   New sessions start on green; blue's stay on blue, whatever the weights say now:")
	var green []*demoUser
	for _, name := range []string{"grace", "heidi", "ivan", "judy"} {
		u := newUser(name)
		green = append(green, u)
		start(u)
		d.say("   %-6s (new) dialog and web session on %s", u.name, u.home)
		if !strings.HasPrefix(u.home, "green") && len(u.lost) == 0 {
			u.lost = append(u.lost, "a new session started on "+u.home+" with blue closed")
		}
	}
	for _, u := range blue {
		d.upgradeStep(ctx, u, "", "")
	}

	victim := d.busiestOf(blue)
	replicas := map[string]string{} // each user's replica partner before the kill
	for _, u := range blue {
		replicas[u.name] = d.routeAfter(u, u.home).Replica
	}
	d.say("\n3. %s (blue) dies mid-way: SIGKILL.", victim)
	if err := c.kill(victim); err != nil {
		d.say("clb demo: %v", err)
		return false
	}
	killed := time.Now()
	if err := d.waitState(victim, "down", 10*time.Second); err != nil {
		d.say("clb demo: %v", err)
		return false
	}
	d.say("   Marked down %.1f s later. Its sessions fail over inside blue, never to green:", time.Since(killed).Seconds())
	for _, u := range blue {
		d.upgradeStep(ctx, u, victim, replicas[u.name])
	}

	d.say("\n4. Blue's sessions finish on blue: its users hang up.")
	for _, u := range blue {
		d.hangUp(ctx, u)
	}
	var st admin.Status
	_ = d.adminGet("/api/v1/status", &st)
	for _, cl := range st.Clusters {
		d.say("   %-6s weight %3d, %d sessions routed to it in the last minute", cl.Name, cl.Weight, cl.Sessions)
	}
	d.say("   blue is empty: no dialog or web session of the demo is left on it. A live operator waits")
	d.say("   for blue's count to fall to 0 (a minute after its last request), upgrades it, and sets")
	d.say("   its weight back (POST /api/v1/clusters/blue/weight?value=100).")
	for _, u := range green {
		d.hangUp(ctx, u)
	}

	lost := 0
	for _, u := range append(blue, green...) {
		if len(u.lost) > 0 {
			lost++
			d.say("   LOST: %s: %s", u.name, strings.Join(u.lost, "; "))
		}
	}
	d.say("\nResult: %d sessions on blue finished there through its closing and the loss of %s, %d new ones on green: %d lost.",
		len(blue), victim, len(green), lost)
	return lost == 0
}

// upgradeStep makes one round of a blue user's traffic and says where it
// went: its instance, or after victim died, want (its replica partner).
func (d *demo) upgradeStep(ctx context.Context, u *demoUser, victim, want string) {
	if len(u.lost) > 0 {
		return
	}
	before := u.counter
	x := u.call.reinvite(ctx)
	web := d.increment(u)
	if !x.ok() {
		u.lost = append(u.lost, fmt.Sprintf("re-INVITE answered %d", x.code))
		return
	}
	where := "stays on " + x.servedBy
	switch {
	case u.home == victim:
		where = "moves to " + x.servedBy + " (its replica partner, in blue)"
		if x.servedBy != want {
			u.lost = append(u.lost, fmt.Sprintf("went to %s, not its replica partner %s", x.servedBy, want))
		}
	case x.servedBy != u.home:
		u.lost = append(u.lost, fmt.Sprintf("moved from %s to %s", u.home, x.servedBy))
	}
	if !strings.HasPrefix(x.servedBy, "blue") || web != x.servedBy {
		u.lost = append(u.lost, fmt.Sprintf("left blue: dialog on %s, web session on %s", x.servedBy, web))
	}
	d.say("   %-6s %s: re-INVITE 200, counter %d → %d", u.name, where, before, u.counter)
}

func (d *demo) hangUp(ctx context.Context, u *demoUser) {
	if len(u.lost) > 0 {
		return
	}
	if x := u.call.bye(ctx); !x.ok() {
		u.lost = append(u.lost, fmt.Sprintf("BYE answered %d", x.code))
	}
}

// busiestOf is the instance with the most of users.
func (d *demo) busiestOf(users []*demoUser) string {
	saved := d.users
	d.users = users
	defer func() { d.users = saved }()
	return d.busiest()
}

// routeAfter is clb's route for u's key, last served by last.
func (d *demo) routeAfter(u *demoUser, last string) admin.Route {
	var r admin.Route
	_ = d.adminGet("/api/v1/route?key=user:"+u.name+"&last="+last, &r)
	return r
}

// adminPost makes a state-changing call of clb's admin API.
func (d *demo) adminPost(path string) error {
	req, _ := http.NewRequest("POST", d.c.admin+path, nil)
	req.Header.Set(admin.AdminHeader, "1")
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("POST %s: %s", path, res.Status)
	}
	return nil
}

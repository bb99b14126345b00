package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"clb/admin"
	"clb/config"
)

// Exit codes of clb ctl, for scripts.
const (
	ctlOK          = 0 // done
	ctlRefused     = 1 // the admin API answered with an error (shown as it gave it)
	ctlUsage       = 2 // bad command line or configuration file
	ctlUnreachable = 3 // no answer from clb, or one that is not the admin API's
)

const ctlUsageText = `usage: clb ctl [-admin URL] [-config FILE] [-token T] [-json] VERB
verbs:
  status [-interval 1s]       instances: state, load factor, share, health, requests/s
                              (requests/s from two polls -interval apart; 0: none)
  instances                   instances' names and addresses
  route [-n 4] KEY            KEY's owner, replica partner and preference list
  enable|disable|drain NAME   change an instance's state
  reload                      reload clb's configuration file
  weight CLUSTER W            set a cluster's share of new sessions (0: closed to them)
  whatif [-remove NAME]... [-add NAME:WEIGHT]...
                              what the change would do, changing nothing; with
                              neither, what draining each instance would do
-admin defaults to listen.admin of -config, else 127.0.0.1:9090; -token to
$CLB_TOKEN, else admin.token of -config.
exit status: 0 done, 1 refused by clb (its error is shown), 2 bad command line,
3 clb unreachable.
`

// ctlFlags are the flags every verb takes, before or after it.
type ctlFlags struct {
	admin, config, token string
	json                 bool
}

func (f *ctlFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&f.admin, "admin", f.admin, "admin API `URL` (http://host:port or host:port)")
	fs.StringVar(&f.config, "config", f.config, "take -admin and -token from this configuration `FILE`")
	fs.StringVar(&f.token, "token", f.token, "bearer `TOKEN` (default $CLB_TOKEN)")
	fs.BoolVar(&f.json, "json", f.json, "print the API's JSON answer")
}

// ctl is clb ctl: the admin API from a shell.
func ctl(args []string, stdout, stderr io.Writer) int {
	var f ctlFlags
	fs := newFlagSet("clb ctl", stderr)
	f.define(fs)
	if err := fs.Parse(args); err != nil {
		return helpOr(err)
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, ctlUsageText)
		return ctlUsage
	}
	verb, rest := fs.Arg(0), fs.Args()[1:]
	vs := newFlagSet("clb ctl "+verb, stderr)
	f.define(vs)
	interval := time.Second
	n := 4
	var remove, add []string
	switch verb {
	case "status":
		vs.DurationVar(&interval, "interval", interval, "time between the two polls that give requests/s (0: one poll, no rates)")
	case "route":
		vs.IntVar(&n, "n", n, "how many instances of the preference list to show")
	case "whatif":
		vs.Func("remove", "remove instance `NAME` (repeatable)", func(s string) error { remove = append(remove, s); return nil })
		vs.Func("add", "add instance `NAME:WEIGHT` (repeatable)", func(s string) error { add = append(add, s); return nil })
	}
	if err := vs.Parse(rest); err != nil {
		return helpOr(err)
	}
	operands := vs.Args()
	want := map[string]int{"status": 0, "instances": 0, "reload": 0, "whatif": 0,
		"route": 1, "enable": 1, "disable": 1, "drain": 1, "weight": 2}
	if k, ok := want[verb]; !ok || len(operands) != k {
		if !ok {
			fmt.Fprintf(stderr, "clb ctl: unknown verb %q\n", verb)
		} else {
			fmt.Fprintf(stderr, "clb ctl %s: want %d operand(s), got %q\n", verb, k, operands)
		}
		fmt.Fprint(stderr, ctlUsageText)
		return ctlUsage
	}
	c, err := newCtlClient(f)
	if err != nil {
		fmt.Fprintf(stderr, "clb ctl: %v\n", err)
		return ctlUsage
	}
	out := &ctlOutput{stdout: stdout, json: f.json}
	switch verb {
	case "status":
		err = c.status(out, interval)
	case "instances":
		err = c.instances(out)
	case "route":
		err = c.route(out, operands[0], n)
	case "enable", "disable", "drain":
		err = c.act(out, verb, operands[0])
	case "reload":
		err = c.reload(out)
	case "weight":
		err = c.weight(out, operands[0], operands[1])
	case "whatif":
		err = c.whatIf(out, remove, add)
	}
	return ctlExit(err, f.json, stdout, stderr)
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsageText) }
	return fs
}

func helpOr(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return ctlOK
	}
	return ctlUsage
}

// apiError is an error answer of the admin API.
type apiError struct {
	status  int
	message string // the API's "error"
	body    []byte
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.status, http.StatusText(e.status), e.message)
}

// unreachable is a failure to get an answer of the admin API.
type unreachable struct{ err error }

func (e *unreachable) Error() string { return e.err.Error() }

func ctlExit(err error, asJSON bool, stdout, stderr io.Writer) int {
	var api *apiError
	var down *unreachable
	switch {
	case err == nil:
		return ctlOK
	case errors.As(err, &api):
		if asJSON {
			_, _ = stdout.Write(api.body)
		}
		fmt.Fprintf(stderr, "clb ctl: %v\n", api)
		return ctlRefused
	case errors.As(err, &down):
		fmt.Fprintf(stderr, "clb ctl: %v\n", down)
		return ctlUnreachable
	}
	fmt.Fprintf(stderr, "clb ctl: %v\n", err)
	return ctlRefused
}

// ctlClient calls one clb's admin API.
type ctlClient struct {
	base  string // http://host:port
	token string
	http  http.Client
}

// newCtlClient finds the admin API's address and token: the flags, then
// $CLB_TOKEN, then the configuration file, then 127.0.0.1:9090.
func newCtlClient(f ctlFlags) (*ctlClient, error) {
	c := &ctlClient{base: f.admin, token: f.token, http: http.Client{Timeout: 30 * time.Second}}
	if c.token == "" {
		c.token = os.Getenv("CLB_TOKEN")
	}
	if f.config != "" {
		cfg, err := config.Load(f.config)
		if err != nil {
			return nil, err
		}
		if c.base == "" {
			if cfg.Listen.Admin.IsZero() {
				return nil, fmt.Errorf("%s: no listen.admin: give -admin", cfg.File)
			}
			host := cfg.Listen.Admin.Host
			if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
				host = "127.0.0.1" // listening on every address: this host's is one
			}
			c.base = net.JoinHostPort(host, strconv.Itoa(cfg.Listen.Admin.Port))
		}
		if c.token == "" {
			c.token = cfg.Admin.Token
		}
	}
	if c.base == "" {
		c.base = "127.0.0.1:9090"
	}
	if !strings.Contains(c.base, "://") {
		c.base = "http://" + c.base
	}
	u, err := url.Parse(c.base)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("-admin %q: want http://host:port", f.admin)
	}
	c.base = strings.TrimSuffix(c.base, "/")
	return c, nil
}

// call sends a request and decodes the JSON answer into out; it returns the
// raw answer too.
func (c *ctlClient) call(method, path string, out any) ([]byte, error) {
	req, err := http.NewRequest(method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if method != http.MethodGet {
		// A state-changing call says it is not a browser's cross-site
		// request: no web page can add a header without a preflight.
		req.Header.Set("X-CLB-Admin", "1")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return nil, &unreachable{err}
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return nil, &unreachable{err}
	}
	if res.StatusCode >= 300 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			return nil, &unreachable{fmt.Errorf("%s %s: %s from %s, not an answer of clb's admin API", method, path, res.Status, c.base)}
		}
		return nil, &apiError{status: res.StatusCode, message: e.Error, body: body}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return nil, &unreachable{fmt.Errorf("%s %s: %v", method, path, err)}
	}
	return body, nil
}

// ctlOutput prints tables for people or JSON for scripts.
type ctlOutput struct {
	stdout io.Writer
	json   bool
}

func (o *ctlOutput) table() *tabwriter.Writer { return tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0) }

func (o *ctlOutput) raw(body []byte) error {
	_, err := o.stdout.Write(body)
	return err
}

func (c *ctlClient) status(o *ctlOutput, interval time.Duration) error {
	var first, st admin.Status
	body, err := c.call("GET", "/api/v1/status", &first)
	if err != nil {
		return err
	}
	rates := map[string]float64{}
	if interval > 0 {
		time.Sleep(interval) // between the two polls whose counts give the rates
		if body, err = c.call("GET", "/api/v1/status", &st); err != nil {
			return err
		}
		if dt := st.Time.Sub(first.Time).Seconds(); dt > 0 {
			for _, prev := range first.Instances {
				for _, cur := range st.Instances {
					if cur.Name == prev.Name {
						rates[cur.Name] = float64(max(0, cur.Requests-prev.Requests)) / dt
					}
				}
			}
		}
	} else {
		st = first
	}
	if o.json {
		// The API's answer, with each instance's requests_per_second.
		var doc map[string]any
		if err := json.Unmarshal(body, &doc); err != nil {
			return &unreachable{err}
		}
		list, _ := doc["instances"].([]any)
		for _, i := range list {
			if m, ok := i.(map[string]any); ok {
				if r, ok := rates[fmt.Sprint(m["name"])]; ok {
					m["requests_per_second"] = r
				}
			}
		}
		return printJSON(o.stdout, doc)
	}
	w := o.table()
	fmt.Fprintf(w, "NAME\tSTATE\tLOAD\tSHARE\tFULL SHARE\tHEALTH\tREQ/S\n")
	for _, i := range st.Instances {
		health := "-"
		if h := i.Health; h != nil {
			health = map[bool]string{true: "up", false: "down"}[h.Up]
			if h.Failures > 0 {
				health += fmt.Sprintf(" (%d failed)", h.Failures)
			}
		}
		rate := "-"
		if r, ok := rates[i.Name]; ok {
			rate = fmt.Sprintf("%.1f", r)
		}
		fmt.Fprintf(w, "%s\t%s\t%.2f\t%s\t%s\t%s\t%s\n", i.Name, i.State, i.LoadFactor, pct(i.Share), pct(i.FullShare), health, rate)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(st.Clusters) > 1 {
		// Several clusters: each one's share of new sessions, and the
		// sessions of the last minute an upgrade waits to fall to 0.
		w = o.table()
		fmt.Fprintf(w, "CLUSTER\tWEIGHT\tNEW SESSIONS\tSESSIONS (1 MIN)\tINSTANCES\n")
		for _, c := range st.Clusters {
			fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%s\n", c.Name, c.Weight, pct(c.Share), c.Sessions, strings.Join(c.Instances, " "))
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintf(o.stdout, "table version %d at %s\n", st.Version, st.Time.Format(time.RFC3339))
	if err == nil && st.Etcd != nil {
		err = printEtcd(o.stdout, st.Etcd)
	}
	if err == nil {
		err = printDiscovery(o.stdout, st.Discovery)
	}
	return err
}

func pct(x float64) string { return fmt.Sprintf("%.1f%%", 100*x) }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *ctlClient) instances(o *ctlOutput) error {
	var out struct {
		Instances []admin.InstanceAddrs `json:"instances"`
	}
	body, err := c.call("GET", "/api/v1/instances", &out)
	if err != nil || o.json {
		return orRaw(o, body, err)
	}
	w := o.table()
	fmt.Fprintf(w, "NAME\tSIP\tHTTP\n")
	for _, i := range out.Instances {
		fmt.Fprintf(w, "%s\t%s\t%s\n", i.Name, dash(i.SIP), dash(i.HTTP))
	}
	return w.Flush()
}

// orRaw prints the API's answer for -json, or returns err.
func orRaw(o *ctlOutput, body []byte, err error) error {
	if err != nil {
		return err
	}
	return o.raw(body)
}

func (c *ctlClient) route(o *ctlOutput, key string, n int) error {
	var r admin.Route
	body, err := c.call("GET", "/api/v1/route?"+url.Values{"key": {key}, "n": {strconv.Itoa(n)}}.Encode(), &r)
	if err != nil || o.json {
		return orRaw(o, body, err)
	}
	w := o.table()
	fmt.Fprintf(w, "key\t%s\n", r.Key)
	owner := dash(r.Owner)
	if r.Fallback {
		owner += " (no live instance admits it: the first live one takes it)"
	}
	fmt.Fprintf(w, "owner\t%s\n", owner)
	fmt.Fprintf(w, "replica\t%s\n", dash(r.Replica))
	fmt.Fprintf(w, "preference\t%s\n", strings.Join(r.Preference, " "))
	return w.Flush()
}

func (c *ctlClient) act(o *ctlOutput, verb, name string) error {
	var st admin.InstanceStatus
	body, err := c.call("POST", "/api/v1/instances/"+url.PathEscape(name)+"/"+verb, &st)
	if err != nil || o.json {
		return orRaw(o, body, err)
	}
	line := fmt.Sprintf("%s: %s, load factor %.2f", st.Name, st.State, st.LoadFactor)
	if st.NextStep != nil {
		line += ", next step at " + st.NextStep.Format(time.RFC3339)
	}
	_, err = fmt.Fprintln(o.stdout, line)
	return err
}

// weight is POST /api/v1/clusters/{name}/weight?value=W.
func (c *ctlClient) weight(o *ctlOutput, cluster, weight string) error {
	var st admin.ClusterStatus
	body, err := c.call("POST", "/api/v1/clusters/"+url.PathEscape(cluster)+"/weight?value="+url.QueryEscape(weight), &st)
	if err != nil || o.json {
		return orRaw(o, body, err)
	}
	_, err = fmt.Fprintf(o.stdout, "%s: weight %d, %.1f%% of new sessions, %d sessions in the last minute\n",
		st.Name, st.Weight, 100*st.Share, st.Sessions)
	return err
}

func (c *ctlClient) reload(o *ctlOutput) error {
	var r admin.Reloaded
	body, err := c.call("POST", "/api/v1/reload", &r)
	if err != nil || o.json {
		return orRaw(o, body, err)
	}
	list := func(s []string) string { return dash(strings.Join(s, " ")) }
	_, err = fmt.Fprintf(o.stdout, "reloaded: %d instances; added %s; removed %s\n", r.Instances, list(r.Added), list(r.Removed))
	return err
}

func (c *ctlClient) whatIf(o *ctlOutput, remove, add []string) error {
	if len(remove) == 0 && len(add) == 0 {
		return c.drains(o)
	}
	q := url.Values{"remove": remove, "add": add}
	var wi admin.WhatIf
	body, err := c.call("GET", "/api/v1/whatif?"+q.Encode(), &wi)
	if err != nil || o.json {
		return orRaw(o, body, err)
	}
	var change []string
	for _, r := range wi.Remove {
		change = append(change, "remove "+r)
	}
	for _, a := range wi.Add {
		change = append(change, fmt.Sprintf("add %s (weight %d)", a.Name, a.Weight))
	}
	fmt.Fprintf(o.stdout, "%s: %s of the keys move (%s to their replica partner, %s to an instance that names their old owner as partner, %s unsafe); %s keep their owner but change replica partner\n",
		strings.Join(change, ", "), pct(wi.Moved), pct(wi.ToReplica), pct(wi.ToNewPartner), pct(wi.Unsafe), pct(wi.ReplicaChanged))
	w := o.table()
	fmt.Fprintf(w, "\nFROM\tTO\tSHARE OF KEYS\n")
	for _, m := range wi.Moves {
		fmt.Fprintf(w, "%s\t%s\t%s\n", dash(m.From), dash(m.To), pct(m.Share))
	}
	fmt.Fprintf(w, "\nNAME\tSHARE NOW\tAFTER\n")
	for _, s := range wi.Shares {
		fmt.Fprintf(w, "%s\t%s\t%s\n", s.Name, pct(s.Before), pct(s.After))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(o.stdout, "table version %d; %d keys compared in %.0f ms; nothing was changed\n", wi.Version, wi.Keys, wi.TookMS)
	return err
}

// drains prints what draining each instance would do.
func (c *ctlClient) drains(o *ctlOutput) error {
	var d admin.Drains
	body, err := c.call("GET", "/api/v1/whatif/drains", &d)
	if err != nil || o.json {
		return orRaw(o, body, err)
	}
	w := o.table()
	fmt.Fprintf(w, "DRAIN\tMOVES\tTO REPLICA\tUNSAFE\tWHERE TO\n")
	for _, di := range d.Drains {
		var to bytes.Buffer
		for k, m := range di.Moves {
			if k == 4 {
				fmt.Fprintf(&to, ", … (%d more)", len(di.Moves)-k)
				break
			}
			if k > 0 {
				to.WriteString(", ")
			}
			fmt.Fprintf(&to, "%s %s", dash(m.To), pct(m.Share))
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", di.Name, pct(di.Moved), pct(di.ToReplica), pct(di.Unsafe), dash(to.String()))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(o.stdout, "table version %d; nothing was changed\n", d.Version)
	return err
}

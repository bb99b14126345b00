package policy_test

import (
	"strings"
	"testing"
	"time"

	"clb/config"
	"clb/httpproxy"
	"clb/policy"
	"clb/sip"
)

// request is one user's SIP request and HTTP request: the same values in
// each protocol's own places.
type request struct {
	sipMethod, sipURI string
	httpMethod, path  string
	fields            []string // header fields both carry
	cookie            string   // HTTP only: SIP has no cookies
}

func (r request) sip() string {
	method, uri := r.sipMethod, r.sipURI
	if method == "" {
		method = "INVITE"
	}
	if uri == "" {
		uri = "sip:bob@example.com"
	}
	var b strings.Builder
	b.WriteString(method + " " + uri + " SIP/2.0\r\n")
	b.WriteString("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n")
	b.WriteString("From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n")
	b.WriteString("Call-ID: c1\r\nCSeq: 1 " + method + "\r\nMax-Forwards: 70\r\n")
	for _, f := range r.fields {
		b.WriteString(f + "\r\n")
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return b.String()
}

func (r request) http() string {
	method, path := r.httpMethod, r.path
	if method == "" {
		method = "GET"
	}
	if path == "" {
		path = "/"
	}
	var b strings.Builder
	b.WriteString(method + " " + path + " HTTP/1.1\r\nHost: app.example.com\r\n")
	b.WriteString("From: <sip:alice@example.com>\r\n") // a converged app's client may send it
	for _, f := range r.fields {
		b.WriteString(f + "\r\n")
	}
	if r.cookie != "" {
		b.WriteString("Cookie: " + r.cookie + "\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

// rules compiles YAML rule lists through config, as clb run does.
func rules(t *testing.T, sipRules, httpRules string) (*policy.Rules, *policy.Rules) {
	t.Helper()
	if httpRules == "" {
		httpRules = sipRules
	}
	indent := func(s string) string { return "    " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n    ") }
	doc := "listen:\n  sip: udp://127.0.0.1:5060\n  http: 127.0.0.1:8080\ninstances:\n  - name: a\n    sip: 127.0.0.1:5071\n    http: 127.0.0.1:8081\n" +
		"keys:\n  sip:\n" + indent(sipRules) + "\n  http:\n" + indent(httpRules) + "\n"
	cfg, err := config.Parse("parity.yaml", []byte(doc))
	if err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	return policy.Compile(cfg.Keys.SIP), policy.Compile(cfg.Keys.HTTP)
}

// TestSameKeyForSIPAndHTTP: one rule file gives one user's SIP request and
// HTTP request one key, for every source kind and every kind of condition
// (SPEC section 5).
func TestSameKeyForSIPAndHTTP(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sipRules  string
		httpRules string // "" = the same as sipRules
		req       request
		want      string // "" = no rule applies
	}{
		{name: "header", sipRules: `- {header: X-User, prefix: "user:"}`,
			req: request{fields: []string{"X-User: alice"}}, want: "user:alice"},
		{name: "header name in any case", sipRules: `- {header: x-USER}`,
			req: request{fields: []string{"X-User: alice"}}, want: "alice"},
		{name: "header absent", sipRules: `- {header: X-User}`,
			req: request{}, want: ""},
		{name: "header with regexp", sipRules: `- {header: X-Session, regexp: 'id=([0-9]+)', prefix: "s:"}`,
			req: request{fields: []string{"X-Session: v=1;id=42;x"}}, want: "s:42"},
		{name: "uri_user of a header", sipRules: `- {header: P-Asserted-Identity, uri_user: true}`,
			req: request{fields: []string{`P-Asserted-Identity: "Alice" <sip:alice@example.com>`}}, want: "alice"},
		{name: "uri_user of From", sipRules: `- {header: From, uri_user: true, prefix: "user:"}`,
			req: request{}, want: "user:alice"},
		{name: "uri_user of compact f", sipRules: `- {header: f, uri_user: true}`,
			req: request{}, want: "alice"},
		{name: "uri_param of a header", sipRules: `- {header: X-Target, uri_param: acct}`,
			req: request{fields: []string{"X-Target: <sip:x@example.com;ACCT=42>"}}, want: "42"},
		{name: "request_uri", sipRules: `- {request_uri: true, regexp: '^(?:sip:|/users/)([a-z]+)'}`,
			req: request{sipURI: "sip:alice@example.com", path: "/users/alice?tab=1"}, want: "alice"},
		{name: "uri_param of request_uri", sipRules: `- {request_uri: true, uri_param: acct}`,
			req: request{sipURI: "sip:bob@example.com;acct=42", path: "/call;acct=42?x=1"}, want: "42"},
		{name: "cookie (HTTP), From (SIP)",
			sipRules:  `- {header: From, uri_user: true}`,
			httpRules: "- {cookie: user}\n- {header: From, uri_user: true}",
			req:       request{cookie: "theme=dark; user=alice"}, want: "alice"},
		{name: "query (HTTP), From (SIP)",
			sipRules:  `- {header: From, uri_user: true}`,
			httpRules: "- {query: user}\n- {header: From, uri_user: true}",
			req:       request{path: "/?user=al%69ce"}, want: "alice"},
		{name: "when equals holds",
			sipRules: "- {header: X-Account, prefix: 'acct:', when: {header: X-Account-Type, equals: business}}\n- {header: From, uri_user: true, prefix: 'user:'}",
			req:      request{fields: []string{"X-Account: 42", "X-Account-Type: business"}}, want: "acct:42"},
		{name: "when equals does not hold",
			sipRules: "- {header: X-Account, prefix: 'acct:', when: {header: X-Account-Type, equals: business}}\n- {header: From, uri_user: true, prefix: 'user:'}",
			req:      request{fields: []string{"X-Account: 42", "X-Account-Type: personal"}}, want: "user:alice"},
		{name: "when exists true",
			sipRules: "- {header: X-Account, when: {header: X-Tenant, exists: true}}",
			req:      request{fields: []string{"X-Account: 42", "X-Tenant: t"}}, want: "42"},
		{name: "when exists true, absent",
			sipRules: "- {header: X-Account, when: {header: X-Tenant, exists: true}}",
			req:      request{fields: []string{"X-Account: 42"}}, want: ""},
		{name: "when exists false",
			sipRules: "- {header: X-Account, when: {header: X-Tenant, exists: false}}",
			req:      request{fields: []string{"X-Account: 42"}}, want: "42"},
		{name: "when method matches",
			sipRules: `- {header: From, uri_user: true, when: {method: true, matches: '^(INVITE|GET)$'}}`,
			req:      request{}, want: "alice"},
		{name: "when method does not match",
			sipRules: `- {header: From, uri_user: true, when: {method: true, matches: '^(INVITE|GET)$'}}`,
			req:      request{sipMethod: "MESSAGE", httpMethod: "POST"}, want: ""},
		{name: "when request_uri matches",
			sipRules: `- {header: X-User, when: {request_uri: true, matches: 'alice'}}`,
			req:      request{sipURI: "sip:alice@example.com", path: "/alice", fields: []string{"X-User: u1"}}, want: "u1"},
		{name: "when header matches, unanchored",
			sipRules: `- {header: X-User, when: {header: User-Agent, matches: 'phone'}}`,
			req:      request{fields: []string{"X-User: u1", "User-Agent: my phone 2.0"}}, want: "u1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sipRules, httpRules := rules(t, tc.sipRules, tc.httpRules)
			sipReq, err := sip.KeySource([]byte(tc.req.sip()))
			if err != nil {
				t.Fatalf("SIP request: %v\n%s", err, tc.req.sip())
			}
			httpReq, err := httpproxy.KeySource([]byte(tc.req.http()))
			if err != nil {
				t.Fatalf("HTTP request: %v\n%s", err, tc.req.http())
			}
			sipKey, _ := sipRules.Key(sipReq)
			httpKey, _ := httpRules.Key(httpReq)
			if sipKey != tc.want || httpKey != tc.want {
				t.Errorf("SIP key %q, HTTP key %q, want %q for both", sipKey, httpKey, tc.want)
			}
		})
	}
}

// TestConditionOnCookieAndQuery: HTTP conditions read cookies and the query.
func TestConditionOnCookieAndQuery(t *testing.T) {
	_, byCookie := rules(t, "- {header: X-User}", "- {header: X-User, when: {cookie: beta, equals: '1'}}")
	_, byQuery := rules(t, "- {header: X-User}", "- {header: X-User, when: {query: v, matches: '^2'}}")
	for _, tc := range []struct {
		rules *policy.Rules
		req   string
		want  string
	}{
		{byCookie, "GET / HTTP/1.1\r\nHost: h\r\nX-User: u\r\nCookie: beta=1\r\n\r\n", "u"},
		{byCookie, "GET / HTTP/1.1\r\nHost: h\r\nX-User: u\r\nCookie: beta=0\r\n\r\n", ""},
		{byQuery, "GET /?v=2.1 HTTP/1.1\r\nHost: h\r\nX-User: u\r\n\r\n", "u"},
		{byQuery, "GET /?v=1 HTTP/1.1\r\nHost: h\r\nX-User: u\r\n\r\n", ""},
	} {
		src, err := httpproxy.KeySource([]byte(tc.req))
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := tc.rules.Key(src); got != tc.want {
			t.Errorf("%q: key %q, want %q", tc.req, got, tc.want)
		}
	}
}

func TestPathParam(t *testing.T) {
	for _, tc := range []struct{ path, name, want string }{
		{"/cart;jsessionid=ABC", "jsessionid", "ABC"},
		{"/cart;JSESSIONID=ABC;x=1", "jsessionid", "ABC"},
		{"/a;jsessionid=X/cart", "jsessionid", ""}, // not the last segment
		{"/cart", "jsessionid", ""},
		{"/cart;jsessionid=ABC?jsessionid=Q", "jsessionid", "ABC"},
		{"", "x", ""},
	} {
		if got, _ := policy.PathParam(tc.path, tc.name); got != tc.want {
			t.Errorf("PathParam(%q, %q) = %q, want %q", tc.path, tc.name, got, tc.want)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{{"0s", 5}, {"-1s", 5}, {"500ms", 1}, {"1s", 1}, {"2s", 2}, {"2500ms", 3}} {
		d, _ := time.ParseDuration(tc.in)
		if got := policy.RetryAfterSeconds(d); got != tc.want {
			t.Errorf("RetryAfterSeconds(%s) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

package admin

import (
	_ "embed"
	"net/http"
)

// pageHTML is the status page: one file, no external assets, so that it works
// where the admin listener is reachable and nothing else is.
//
//go:embed page.html
var pageHTML []byte

// page is GET /: the status page, which polls GET /api/v1/status, draws
// each instance's requests per second from successive answers, looks keys
// up with GET /api/v1/route and shows GET /api/v1/whatif/drains.
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(pageHTML)
}

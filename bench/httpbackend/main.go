// Command httpbackend is the back end of the HTTP benchmarks: a minimal
// net/http server that answers every request with a short body naming
// itself. It is a benchmark tool, not part of clb.
package main

import (
	"flag"
	"log"
	"net/http"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18081", "listen address")
	name := flag.String("name", "backend", "name in each response")
	flag.Parse()
	body := []byte("served by " + *name + "\n")
	log.Fatal(http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	})))
}

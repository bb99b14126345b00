// Command clb is the converged SIP + HTTP load balancer's command line:
//
//	clb demo [-upgrade]             show a session surviving the loss of an instance
//	                                (-upgrade: an online upgrade across two clusters)
//	clb run -config FILE            serve (also: clb -config FILE)
//	clb check -config FILE          validate FILE and print a summary
//	clb route -config FILE [KEY…]   print KEY OWNER REPLICA per key
//	clb ctl [-admin URL] VERB …     the admin API from a shell
//
// Everything is wired here and passed down; the packages hold no globals.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"clb/instance"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

const usage = `usage:
  clb demo [-upgrade] [-stay]     start clb and four sample instances on loopback and show
                                  sessions surviving the loss and return of an instance
                                  (-upgrade: two clusters, an online upgrade from blue to green)
  clb run -config FILE [-log json|console]
                                  serve until SIGINT or SIGTERM (also: clb -config FILE)
  clb check -config FILE          validate FILE, print a summary; exit 1 on error
  clb route -config FILE [KEY …]  print "KEY OWNER REPLICA" for each key, from the
                                  arguments or else one per line from standard input
  clb ctl [-admin URL] [-config FILE] [-token T] [-json]
          status|instances|route KEY|enable|disable|drain NAME|reload|weight CLUSTER W|
          whatif [-remove NAME]… [-add NAME:WEIGHT]…
                                  the admin API of a running clb (clb ctl -h)
`

// run is main with its surroundings passed in; it returns the exit code:
// 0 done, 1 the configuration or the input is wrong, 2 the command line is.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return runServe(args[1:], stderr)
	case "check":
		return check(args[1:], stdout, stderr)
	case "route":
		return route(args[1:], stdin, stdout, stderr)
	case "ctl":
		return ctl(args[1:], stdout, stderr)
	case "demo":
		return runDemo(args[1:], stdout, stderr)
	case "instance":
		// The sample instance (cmd/clb-instance), in this binary for clb
		// demo, which starts it as a process of its own.
		return instance.Main(args[1:], stdin, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	if strings.HasPrefix(args[0], "-config") || strings.HasPrefix(args[0], "--config") {
		return runServe(args, stderr)
	}
	fmt.Fprintf(stderr, "clb: unknown command %q\n%s", args[0], usage)
	return 2
}

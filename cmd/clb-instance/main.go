// Command clb-instance is the sample back-end instance of SPEC section 10: a
// SIP UAS and an HTTP app (a per-session counter and task list) that keep
// state per BEKey and replicate it to the replica partner clb names. See
// package instance; `clb demo` runs it.
//
//	clb-instance -name NAME [-sip host:port] [-http host:port] [-clb URL] [-ring D]
package main

import (
	"os"

	"clb/instance"
)

func main() {
	os.Exit(instance.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

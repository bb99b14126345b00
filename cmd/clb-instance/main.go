// Command clb-instance is the sample back-end instance of SPEC section 10: a
// SIP UAS and an HTTP app (a per-session counter and task list) that keep
// state per BEKey and replicate it to the replica partner clb names. See
// package instance; `clb demo` runs it. With -etcd it registers itself for
// every clb node that shares that etcd (SPEC section 11), under a lease it
// keeps alive: killed, it leaves their tables when the lease expires.
//
//	clb-instance -name NAME [-sip host:port] [-http host:port] [-clb URL] [-ring D] [-etcd URL[,URL]] [-etcd-prefix P]
package main

import (
	"os"

	"clb/instance"
)

func main() {
	os.Exit(instance.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

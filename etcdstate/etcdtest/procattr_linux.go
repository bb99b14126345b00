package etcdtest

import "syscall"

// procAttr has the kernel kill etcd if the test process dies first (a
// test binary killed by its -timeout runs no cleanup).
func procAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }

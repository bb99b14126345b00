package main

import (
	"net"
	"strconv"

	"go.uber.org/zap"
)

// notifier tells systemd how clb is doing (sd_notify(3), for Type=notify
// units): READY=1 once the listeners are bound, RELOADING=1 and READY=1
// around a reload, STOPPING=1 at shutdown. It writes one datagram per state
// to the unix socket systemd names in NOTIFY_SOCKET (a leading '@' is the
// abstract namespace, which the net package maps). The zero value, for a clb
// not started by systemd, does nothing.
type notifier struct {
	socket string // NOTIFY_SOCKET
	log    *zap.Logger
}

func (n notifier) notify(state string) {
	if n.socket == "" {
		return
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err == nil {
		_, err = c.Write([]byte(state))
		c.Close()
	}
	if err != nil {
		// systemd will not hear it: it times the start or reload out and
		// says so; this says why.
		n.log.Warn("sd_notify failed", zap.String("socket", n.socket), zap.String("state", state), zap.Error(err))
	}
}

func (n notifier) ready() { n.notify("READY=1") }

func (n notifier) stopping() { n.notify("STOPPING=1") }

// reloading starts a reload; ready ends it. MONOTONIC_USEC lets systemd
// tell this reload from an earlier one (systemd 253 and later require it).
func (n notifier) reloading() {
	state := "RELOADING=1"
	if usec, ok := monotonicUsec(); ok {
		state += "\nMONOTONIC_USEC=" + strconv.FormatInt(usec, 10)
	}
	n.notify(state)
}

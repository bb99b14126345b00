package sip

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestTricklingClientCut: a TCP client that sends a message one byte at a
// time, never ending it, is cut off once the message has taken
// MessageTimeout, though every byte came well within the idle timeout; a
// call from another client goes on meanwhile.
func TestTricklingClientCut(t *testing.T) {
	c := newCluster(t, clusterOptions{n: 1, messageTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", c.clb("tcp").String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, "OPTIONS sip:x@example.com SIP/2.0\r\n"); err != nil {
		t.Fatal(err)
	}
	// The client's pace, a byte every 20 ms: not a wait for clb.
	stop := make(chan struct{})
	trickled := make(chan int)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		n := 0
		for {
			select {
			case <-stop:
				trickled <- n
				return
			case <-tick.C:
				if _, err := conn.Write([]byte("X")); err != nil {
					trickled <- n
					return
				}
				n++
			}
		}
	}()
	phone := newPeer(t, "phone", "udp", nil)
	d, _ := c.call(phone, "alice")
	if d.instance == "" {
		t.Fatal("the call did not reach an instance")
	}
	// clb closes the trickling connection: the read ends (EOF or reset)
	// rather than at the test's 20 s deadline.
	_, err = io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("clb kept a connection whose message never ended")
	}
	close(stop)
	if n := <-trickled; n > 200 {
		t.Errorf("clb took %d trickled bytes (20 ms apart) before closing, want it cut at its 300 ms message timeout", n)
	}
}

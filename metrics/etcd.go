package metrics

import "github.com/prometheus/client_golang/prometheus"

// EtcdUp registers clb_etcd_up, read from up at each scrape: 1 while etcd,
// the state clb nodes share, answers; 0 while this node cannot reach it and
// routes on the last state it had. Only a node with etcd configured has it.
func (m *Metrics) EtcdUp(up func() bool) {
	if m == nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "clb_etcd_up",
		Help: "1 while etcd, the state clb nodes share, answers; 0 while this node cannot reach it (it routes on the last state it had and refuses enable, disable and drain).",
	}, func() float64 {
		if up() {
			return 1
		}
		return 0
	}))
}

package metrics

// EtcdUp registers clb_etcd_up, read from up at each scrape: 1 while etcd,
// the state clb nodes share, answers; 0 while this node cannot reach it and
// routes on the last state it had. Only a node with etcd configured has it.
func (m *Metrics) EtcdUp(up func() bool) {
	m.upGauge("clb_etcd_up", "1 while etcd, the state clb nodes share, answers; 0 while this node cannot reach it (it routes on the last state it had and refuses enable, disable and drain).", up)
}

// DiscoveryUp registers clb_discovery_up, read from up at each scrape: 1
// while every SRV name's last look-up answered; 0 while one did not and
// its last answer is in use. Only a node with discovery.sip or
// discovery.http has it.
func (m *Metrics) DiscoveryUp(up func() bool) {
	m.upGauge("clb_discovery_up", "1 while the last look-up of every SRV name (discovery.sip, discovery.http) answered; 0 while one did not (its last answer is in use).", up)
}

// upGauge registers a gauge of name, 1 while up says so and 0 otherwise.
func (m *Metrics) upGauge(name, help string, up func() bool) {
	if m == nil {
		return
	}
	gaugeFunc(m.reg, name, help, func() float64 {
		if up() {
			return 1
		}
		return 0
	})
}

package policy

import "clb/balancer"

// The fields of SPEC section 4, as clb writes them.
const (
	FieldKey      = "X-CLB-Key"
	FieldInstance = "X-CLB-Instance"
	FieldReplica  = "X-CLB-Replica"
	FieldPrevious = "X-CLB-Previous"
	FieldCluster  = "X-CLB-Cluster"
	// FieldStarted is how an instance tells clb's health probes when it
	// started, in Unix seconds, so that every clb node ramps it up from the
	// same moment (SPEC section 11).
	FieldStarted = "X-CLB-Started"
)

// AppendFields appends the X-CLB-* fields that tell the instance d.Owner
// about key (X-CLB-Cluster: the owner's cluster, SPEC section 13), each line ending in CRLF, as SIP and HTTP/1.1 heads both take
// them. The key is percent-encoded, so that it cannot inject a field.
func AppendFields(dst []byte, key string, d *balancer.Decision) []byte {
	dst = append(dst, FieldKey+": "...)
	dst = AppendEscapedKey(dst, key)
	dst = append(dst, "\r\n"+FieldInstance+": "...)
	dst = append(dst, d.Owner.Name...)
	dst = append(dst, "\r\n"+FieldCluster+": "...)
	dst = append(dst, d.Owner.ClusterName()...)
	dst = append(dst, "\r\n"...)
	if d.Replica != nil {
		dst = append(dst, FieldReplica+": "...)
		dst = append(dst, d.Replica.Name...)
		dst = append(dst, "\r\n"...)
	}
	if d.Previous != nil {
		dst = append(dst, FieldPrevious+": "...)
		dst = append(dst, d.Previous.Name...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// IsCLBField reports whether a field name is one of clb's X-CLB-* family,
// in any case: a client's such field is forged and is removed before the
// request goes on, so that no client can point an instance at a replica of
// its choosing.
func IsCLBField(name []byte) bool { return len(name) > 6 && EqualFold(name[:6], "x-clb-") }

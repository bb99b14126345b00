package etcdkv

import "context"

// Header is the part of every answer's header clb reads.
type Header struct {
	// Revision is the store's revision when etcd answered.
	Revision int64 `json:"revision,string"`
}

// KeyValue is a key as etcd holds it.
type KeyValue struct {
	Key            []byte `json:"key"`
	Value          []byte `json:"value"`
	CreateRevision int64  `json:"create_revision,string"`
	ModRevision    int64  `json:"mod_revision,string"`
	Version        int64  `json:"version,string"`
	Lease          int64  `json:"lease,string"`
}

// RangeRequest reads Key, or with RangeEnd the keys from Key up to
// RangeEnd (PrefixEnd(Key): those that start with Key). The gateway's JSON
// mapping of etcd's RangeRequest (base64 bytes, int64 as strings).
type RangeRequest struct {
	Key       []byte `json:"key"`
	RangeEnd  []byte `json:"range_end,omitempty"`
	CountOnly bool   `json:"count_only,omitempty"`
}

// RangeResponse is the keys read (none with CountOnly) and their count.
type RangeResponse struct {
	Header Header     `json:"header"`
	KVs    []KeyValue `json:"kvs"`
	Count  int64      `json:"count,string"`
}

// PutRequest writes Value under Key, attached to Lease if not 0.
type PutRequest struct {
	Key   []byte `json:"key"`
	Value []byte `json:"value"`
	Lease int64  `json:"lease,omitempty,string"`
}

// PutResponse says at what revision the put was.
type PutResponse struct {
	Header Header `json:"header"`
}

// PrefixEnd is the RangeEnd of every key that starts with prefix.
func PrefixEnd(prefix []byte) []byte {
	end := append([]byte(nil), prefix...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return []byte{0} // every key: prefix is all 0xff
}

// Range reads keys, linearizably (a member without quorum does not
// answer).
func (c *Client) Range(ctx context.Context, req RangeRequest) (*RangeResponse, error) {
	res := new(RangeResponse)
	if err := c.call(ctx, "/v3/kv/range", req, res, true); err != nil {
		return nil, err
	}
	return res, nil
}

// Put writes a key. A put whose connection broke once sent is not sent
// again, to another member or the same: its error says so, and etcd may
// have it.
func (c *Client) Put(ctx context.Context, req PutRequest) (*PutResponse, error) {
	res := new(PutResponse)
	if err := c.call(ctx, "/v3/kv/put", req, res, false); err != nil {
		return nil, err
	}
	return res, nil
}

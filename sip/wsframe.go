package sip

import "encoding/binary"

// WebSocket frames (RFC 6455 5.2) as clb's server side reads and writes
// them: clb negotiates no extension, so every RSV bit must be clear.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xA
)

// Close status codes clb sends (RFC 6455 7.4.1).
const (
	closeNormal     = 1000
	closeGoingAway  = 1001
	closeProtocol   = 1002
	closeInvalid    = 1007
	closeTooBig     = 1009
	maxFrameHeader  = 14  // 2 + 8 (length) + 4 (mask)
	maxControlFrame = 125 // a control frame's payload (RFC 6455 5.5)
)

// wsFrame is a frame header as parseFrame read it.
type wsFrame struct {
	fin    bool
	op     byte
	mask   [4]byte
	header int // bytes of the header
	length int // bytes of the payload
}

// frameStatus is what parseFrame made of its input.
type frameStatus int

const (
	frameNeedMore frameStatus = iota // the header is not all there
	frameOK                          // header read; the payload may still be coming
	frameBad                         // not a frame a server may accept: close with f.closeCode
)

// parseFrame reads the header of the frame at the start of b, as a server
// must accept it: masked (a client's frames always are), no RSV bit, a known
// opcode, a control frame whole and at most 125 bytes, a data frame's
// payload at most max bytes. For frameBad, code is the close status to send.
func parseFrame(b []byte, max int) (f wsFrame, st frameStatus, code uint16) {
	if len(b) < 2 {
		return f, frameNeedMore, 0
	}
	f.fin = b[0]&0x80 != 0
	f.op = b[0] & 0x0F
	if b[0]&0x70 != 0 {
		return f, frameBad, closeProtocol
	}
	switch f.op {
	case opContinuation, opText, opBinary:
	case opClose, opPing, opPong:
		if !f.fin {
			return f, frameBad, closeProtocol
		}
	default:
		return f, frameBad, closeProtocol
	}
	if b[1]&0x80 == 0 {
		return f, frameBad, closeProtocol // unmasked from a client (5.1)
	}
	n := uint64(b[1] & 0x7F)
	h := 2
	switch n {
	case 126:
		if len(b) < 4 {
			return f, frameNeedMore, 0
		}
		n, h = uint64(binary.BigEndian.Uint16(b[2:])), 4
	case 127:
		if len(b) < 10 {
			return f, frameNeedMore, 0
		}
		n, h = binary.BigEndian.Uint64(b[2:]), 10
	}
	if f.op >= opClose && n > maxControlFrame {
		return f, frameBad, closeProtocol
	}
	if n > uint64(max) {
		return f, frameBad, closeTooBig
	}
	if len(b) < h+4 {
		return f, frameNeedMore, 0
	}
	copy(f.mask[:], b[h:h+4])
	f.header, f.length = h+4, int(n)
	return f, frameOK, 0
}

// appendFrameHeader appends the header of a final, unmasked frame (a
// server's) of op carrying n bytes.
func appendFrameHeader(dst []byte, op byte, n int) []byte {
	dst = append(dst, 0x80|op)
	switch {
	case n < 126:
		return append(dst, byte(n))
	case n <= 0xFFFF:
		return binary.BigEndian.AppendUint16(append(dst, 126), uint16(n))
	}
	return binary.BigEndian.AppendUint64(append(dst, 127), uint64(n))
}

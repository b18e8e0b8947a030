package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pglogrepl"

	outboxrelay "github.com/outbox-relay/outbox-relay"
	"github.com/outbox-relay/outbox-relay/route"
)

// This file reads the pgoutput protocol, version 1
// (https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html).
// It is written here rather than taken from pglogrepl.Parse so that the hot
// path allocates nothing per column and malformed input is an error, never
// a panic (see FuzzDecode).

// reader consumes big-endian fields; the first short read sets err and
// every later read returns zero values.
type reader struct {
	buf []byte
	err error
}

func (r *reader) need(n int) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || len(r.buf) < n {
		r.err = errors.New("message truncated")
		return false
	}
	return true
}

func (r *reader) u8() byte {
	if !r.need(1) {
		return 0
	}
	v := r.buf[0]
	r.buf = r.buf[1:]
	return v
}

func (r *reader) u16() uint16 {
	if !r.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(r.buf)
	r.buf = r.buf[2:]
	return v
}

func (r *reader) u32() uint32 {
	if !r.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(r.buf)
	r.buf = r.buf[4:]
	return v
}

func (r *reader) u64() uint64 {
	if !r.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(r.buf)
	r.buf = r.buf[8:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if !r.need(n) {
		return nil
	}
	v := r.buf[:n:n]
	r.buf = r.buf[n:]
	return v
}

// cstring reads a NUL-terminated string.
func (r *reader) cstring() string {
	if r.err != nil {
		return ""
	}
	for i, c := range r.buf {
		if c == 0 {
			s := string(r.buf[:i])
			r.buf = r.buf[i+1:]
			return s
		}
	}
	r.err = errors.New("string not terminated")
	return ""
}

// pgEpoch is the zero of Postgres timestamps.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func (r *reader) time() time.Time {
	return pgEpoch.Add(time.Duration(int64(r.u64())) * time.Microsecond)
}

func (r *reader) lsn() outboxrelay.LSN { return outboxrelay.LSN(r.u64()) }

// readTuple fills vals (reused across calls) with the tuple's columns.
// Their Data aliases the message: the mapper copies what it keeps.
func (r *reader) readTuple(vals []route.Value) ([]route.Value, error) {
	n := int(r.u16())
	vals = vals[:0]
	for i := 0; i < n && r.err == nil; i++ {
		var v route.Value
		switch kind := r.u8(); kind {
		case pglogrepl.TupleDataTypeNull:
			v.Kind = route.Null
		case pglogrepl.TupleDataTypeToast:
			v.Kind = route.Unchanged
		case pglogrepl.TupleDataTypeText:
			v.Kind, v.Data = route.Text, r.bytes(int(int32(r.u32())))
		case pglogrepl.TupleDataTypeBinary:
			v.Kind, v.Data = route.Binary, r.bytes(int(int32(r.u32())))
		default:
			if r.err == nil {
				return vals, fmt.Errorf("unknown tuple column kind %q", kind)
			}
		}
		vals = append(vals, v)
	}
	return vals, r.err
}

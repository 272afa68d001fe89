package inbox

import (
	"encoding/binary"
	"time"

	"github.com/google/uuid"
)

// UUIDv7Time returns the creation time a UUIDv7 carries in its first 48 bits (Unix
// milliseconds), as in every outbox event ID. ok is false for anything else: another
// UUID version, or not a UUID at all.
func UUIDv7Time(id string) (t time.Time, ok bool) {
	if len(id) != 36 { // the canonical form only: outbox IDs are written so
		return time.Time{}, false
	}
	u, err := uuid.Parse(id)
	if err != nil || u.Version() != 7 || u.Variant() != uuid.RFC4122 {
		return time.Time{}, false
	}
	var b [8]byte
	copy(b[2:], u[:6])
	return time.UnixMilli(int64(binary.BigEndian.Uint64(b[:]))), true
}

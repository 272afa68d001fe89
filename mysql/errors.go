package mysql

import (
	"errors"
	"fmt"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/fitiq/outbox"
)

// Server error numbers the store acts on. Errors are matched by number, never by
// message text; both MySQL and MariaDB use these.
const (
	erDupEntry              = 1062 // a unique index refused a row
	erLockDeadlock          = 1213
	erNoSuchTable           = 1146
	erUnknownSystemVariable = 1193
	erTruncatedWrongValue   = 1366 // a string the column's character set cannot hold
	erCheckConstraint       = 4025 // MariaDB: a CHECK (JSON columns are CHECK json_valid)
	erCheckConstraintMySQL  = 3819
	erInvalidJSONText       = 3140 // MySQL: not JSON
)

// errorNumber returns the server's error number in err's chain, or 0.
func errorNumber(err error) uint16 {
	var me *gomysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// isClaimConflict reports an error after which a claim is simply run again: two
// claimers raced for one ordering key (only the key_in_flight index can refuse a
// claim's update as a duplicate), or the server broke a deadlock between them.
func isClaimConflict(err error) bool {
	switch errorNumber(err) {
	case erDupEntry, erLockDeadlock:
		return true
	}
	return false
}

// isDeadlock reports a transaction the server rolled back to break a deadlock; the
// store's own short transactions run again after one.
func isDeadlock(err error) bool { return errorNumber(err) == erLockDeadlock }

// duplicateKey returns the name of the unique index that refused a row (error 1062),
// or "" for any other error. The server reports the key only inside the message,
// last and quoted: "for key 'id_key'" (MariaDB) or "for key 'table.id_key'" (MySQL
// 8.0.19+); the name is read from there, not the wording around it.
func duplicateKey(err error) string {
	var me *gomysql.MySQLError
	if !errors.As(err, &me) || me.Number != erDupEntry {
		return ""
	}
	msg := strings.TrimSuffix(me.Message, "'")
	if len(msg) == len(me.Message) {
		return ""
	}
	key := msg[strings.LastIndexByte(msg, '\'')+1:]
	return key[strings.LastIndexByte(key, '.')+1:]
}

// enqueueError turns a database refusal of an insert into the error a caller can act
// on. An insert writes a pending event, whose key_in_flight is NULL, so id_key is the
// only unique index it can run into; a duplicate whose key cannot be read is taken
// for it too.
func enqueueError(err error) error {
	switch errorNumber(err) {
	case erDupEntry:
		if key := duplicateKey(err); key != "" && key != "id_key" {
			return fmt.Errorf("outbox/mysql: insert events: %w", err)
		}
		return fmt.Errorf("outbox/mysql: insert events: %w", &outbox.FieldError{Field: "ID", Problem: "is already used by another event"})
	case erTruncatedWrongValue, erCheckConstraint, erCheckConstraintMySQL, erInvalidJSONText:
		return fmt.Errorf("outbox/mysql: insert events: %w: %w", outbox.ErrInvalid, err)
	}
	return fmt.Errorf("outbox/mysql: insert events: %w", err)
}

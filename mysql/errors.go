package mysql

import (
	"errors"
	"fmt"

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

// enqueueError turns a database refusal of an insert into the error a caller can act
// on. An insert writes a pending event, whose key_in_flight is NULL: a duplicate can
// only be the event ID.
func enqueueError(err error) error {
	switch errorNumber(err) {
	case erDupEntry:
		return fmt.Errorf("outbox/mysql: insert events: %w", &outbox.FieldError{Field: "ID", Problem: "is already used by another event"})
	case erTruncatedWrongValue, erCheckConstraint, erCheckConstraintMySQL, erInvalidJSONText:
		return fmt.Errorf("outbox/mysql: insert events: %w: %w", outbox.ErrInvalid, err)
	}
	return fmt.Errorf("outbox/mysql: insert events: %w", err)
}

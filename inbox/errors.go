package inbox

import (
	"errors"

	"github.com/fitiq/outbox"
)

// argError names the argument of a call that cannot be used.
func argError(name, problem string) error {
	return &outbox.FieldError{Field: "inbox: " + name, Problem: problem}
}

// sqlState returns the SQLSTATE of a PostgreSQL error (pgconn.PgError reports it),
// or "" for any other error. An interface, so that the package does not pull in a
// driver its user does not use.
func sqlState(err error) string {
	var e interface{ SQLState() string }
	if errors.As(err, &e) {
		return e.SQLState()
	}
	return mysqlState(err)
}

// transient reports whether the database aborted the transaction to resolve a
// conflict with another (serialization failure, deadlock), so that running it again
// may succeed.
func transient(err error) bool {
	switch sqlState(err) {
	case "40001", "40P01":
		return true
	}
	return false
}

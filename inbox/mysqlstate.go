package inbox

import (
	"errors"

	"github.com/go-sql-driver/mysql"
)

// mysqlState returns the SQLSTATE of a MySQL or MariaDB error, or "". Deadlocks
// (1213) come as "40001", like a PostgreSQL serialization failure.
func mysqlState(err error) string {
	var e *mysql.MySQLError
	if errors.As(err, &e) {
		return string(e.SQLState[:])
	}
	return ""
}

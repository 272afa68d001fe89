package inbox

import (
	"fmt"
	"testing"

	"github.com/go-sql-driver/mysql"
)

// The driver's error is read without importing the driver: a deadlock, wrapped or not,
// is a serialization failure, and other errors have no state.
func TestMySQLStateReadsTheDriversError(t *testing.T) {
	deadlock := &mysql.MySQLError{Number: 1213, SQLState: [5]byte{'4', '0', '0', '0', '1'}, Message: "Deadlock found"}
	cases := []struct {
		err  error
		want string
	}{
		{deadlock, "40001"},
		{fmt.Errorf("commit: %w", deadlock), "40001"},
		{fmt.Errorf("plain"), ""},
		{nil, ""},
	}
	for _, c := range cases {
		if got := mysqlState(c.err); got != c.want {
			t.Errorf("mysqlState(%v) = %q, want %q", c.err, got, c.want)
		}
	}
	if !transient(fmt.Errorf("tx: %w", deadlock)) {
		t.Error("a wrapped MySQL deadlock is not transient")
	}
}

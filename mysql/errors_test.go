package mysql

import (
	"fmt"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
)

// The unique index that refused a row is read from where each server puts its name.
func TestDuplicateKeyNamesTheIndex(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		key  string
	}{
		{"MariaDB", &gomysql.MySQLError{Number: 1062, Message: "Duplicate entry '\x01\x90' for key 'id_key'"}, "id_key"},
		{"MySQL 8.0.19+", &gomysql.MySQLError{Number: 1062, Message: "Duplicate entry 'k' for key 'outbox_events.key_in_flight'"}, "key_in_flight"},
		{"wrapped", fmt.Errorf("insert: %w", &gomysql.MySQLError{Number: 1062, Message: "Duplicate entry 'x' for key 'id_key'"}), "id_key"},
		{"another error", &gomysql.MySQLError{Number: 1213, Message: "Deadlock found when trying to get lock; try restarting transaction"}, ""},
		{"no key in the message", &gomysql.MySQLError{Number: 1062, Message: "Duplicate entry"}, ""},
		{"not a server error", fmt.Errorf("for key 'id_key'"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := duplicateKey(tc.err); got != tc.key {
				t.Fatalf("duplicateKey(%v) = %q, want %q", tc.err, got, tc.key)
			}
		})
	}
}

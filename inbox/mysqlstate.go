package inbox

import (
	"errors"
	"reflect"
)

// mysqlState returns the SQLSTATE of a MySQL or MariaDB error, or "". Deadlocks
// (1213) come as "40001", like a PostgreSQL serialization failure.
//
// go-sql-driver/mysql's *MySQLError keeps the state in an exported field, SQLState
// [5]byte, and has no method to read it through. The field is read by name rather
// than by importing the driver, so that a program that never talks to MySQL (one that
// only imports the inbox, or the metrics that observe it) does not link the driver.
func mysqlState(err error) string {
	for e := err; e != nil; e = errors.Unwrap(e) {
		v := reflect.ValueOf(e)
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
			continue
		}
		if v.Elem().Type().Name() != "MySQLError" {
			continue
		}
		f := v.Elem().FieldByName("SQLState")
		if f.IsValid() && f.Kind() == reflect.Array && f.Len() == 5 && f.Type().Elem().Kind() == reflect.Uint8 {
			var b [5]byte
			reflect.Copy(reflect.ValueOf(b[:]), f)
			return string(b[:])
		}
	}
	return ""
}

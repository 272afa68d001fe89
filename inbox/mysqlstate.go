package inbox

// mysqlState is replaced when MySQL support is built in.
func mysqlState(error) string { return "" }

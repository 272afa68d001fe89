package sqlite

// CountRecentQuery is the statement behind Stats.Recent, for the benchmark.
const CountRecentQuery = countRecent

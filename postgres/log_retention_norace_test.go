//go:build !race

package postgres_test

const logRetentionRace = false

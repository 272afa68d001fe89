package postgres

// Hooks for the log relay's external tests.

// SilenceLogRelay stops r's heartbeat, as if its process froze while it delivers: the
// server then ends its session once LeaseDuration has passed.
func SilenceLogRelay(r *LogRelay) { r.silent = true }

// DrainEveryShard makes r's Drain pass over every shard each time, as it did before
// it stepped only the shards with events.
func DrainEveryShard(r *LogRelay) { r.drainEvery = true }

package logdelivery

import "time"

// CountRetention is how long the log stores keep their relays' per-minute counts of
// deliveries (postgres.LogDeliveredRetention, sqlite.LogDeliveredRetention): a day,
// well past any health window (outbox.DefaultHealthWindow is 15 minutes), and a day
// of minutes is 1,440 small rows per cursor.
const CountRetention = 24 * time.Hour

// Minute is the minute a delivery at t is counted in: t truncated to the minute, in
// UTC. A window from since counts the minutes from Minute(since) on, so it may reach
// up to a minute further back than since.
func Minute(t time.Time) time.Time { return t.UTC().Truncate(time.Minute) }

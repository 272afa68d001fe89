package outbox

import (
	"context"
	"time"
)

// Timeline is implemented by stores that can count, from their indexes, how many
// events settled in each minute of a recent window. It is not part of Store: the
// dashboard draws its throughput chart when the store offers it, and leaves the chart
// out otherwise.
type Timeline interface {
	// Timeline returns one bucket per minute of [q.Since, q.Until) in which an event
	// completed or failed, oldest first; minutes with neither are left out.
	Timeline(ctx context.Context, q TimelineQuery) ([]TimelineBucket, error)
}

// TimelineQuery is the window a Timeline counts.
type TimelineQuery struct {
	Since, Until time.Time
	// CompletedSince, when after Since, counts completions only from then on (the
	// buckets before it carry failures alone): a caller that keeps the completions of
	// minutes already counted asks only for the new ones, since those of a past minute
	// do not change. Failures are always counted over the whole window, because a failed
	// event leaves the count when a later attempt completes it.
	CompletedSince time.Time
}

// TimelineBucket counts one minute.
type TimelineBucket struct {
	// Minute is the start of the minute, in UTC.
	Minute time.Time `json:"minute"`
	// Completed counts events completed in the minute.
	Completed int `json:"completed"`
	// Failed counts events whose latest attempt failed in the minute and that are still
	// failed, retrying or given up: a failure that a later attempt made good is counted
	// as the completion it became, not here.
	Failed int `json:"failed"`
	// GivenUp is the part of Failed that will not be retried.
	GivenUp int `json:"given_up"`
}

// KeyInspector is implemented by stores that can tell what an ordering key waits on.
// It is not part of Store; the dashboard uses it to show what holds an event back.
type KeyInspector interface {
	// KeyHead returns the earliest event of the ordering key that is not completed:
	// later events of the key wait until it is. It returns ErrNotFound when every
	// event of the key is completed (or there is none).
	KeyHead(ctx context.Context, key string) (Event, error)
}

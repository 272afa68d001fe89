package kafkasink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox/sink"
)

// Message is one record as Consume hands it to its callback.
type Message struct {
	Record *kgo.Record
}

// EventID returns the Outbox-Id header: the ID of the event the record carries, to
// deduplicate on. It is empty for a record the sink did not produce.
func (m Message) EventID() string { return m.Header(HeaderID) }

// Header returns the value of the record's first header named key, or "".
func (m Message) Header(key string) string {
	for _, h := range m.Record.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Envelope decodes the record's value.
func (m Message) Envelope() (sink.Envelope, error) {
	var env sink.Envelope
	if err := json.Unmarshal(m.Record.Value, &env); err != nil {
		return env, fmt.Errorf("kafkasink: record %s/%d@%d is not an outbox envelope: %w",
			m.Record.Topic, m.Record.Partition, m.Record.Offset, err)
	}
	return env, nil
}

// ErrAutoCommit is returned by Consume for a client that would commit offsets on its
// own, before the callback has succeeded.
var ErrAutoCommit = errors.New("kafkasink: Consume needs a consumer group client with kgo.DisableAutoCommit")

// Consume polls client and calls fn for each record, one at a time in each partition's
// order, and commits a record's offset only after fn has returned nil for it. It runs
// until ctx ends or the client is closed (returning nil) or fn fails.
//
// When fn returns an error, Consume commits the records that succeeded before it,
// rewinds the client to the failed record (and to the first unhandled record of every
// other partition of the poll), and returns the error: calling Consume again, after a
// pause of the caller's choosing, hands the failed record to fn first. A record whose
// effect was applied but whose commit was lost is handed over again, so fn must be
// idempotent; an inbox keyed by Message.EventID makes its effects exactly once.
//
// client must be a group consumer (kgo.ConsumerGroup, kgo.ConsumeTopics) built with
// kgo.DisableAutoCommit. With kgo.BlockRebalanceOnPoll, which is recommended, no
// rebalance takes the partitions away between a poll and its commit.
func Consume(ctx context.Context, client *kgo.Client, fn func(ctx context.Context, m Message) error) error {
	if g, _ := client.OptValue(kgo.ConsumerGroup).(string); g == "" {
		return ErrAutoCommit
	}
	if off, _ := client.OptValue(kgo.DisableAutoCommit).(bool); !off {
		return ErrAutoCommit
	}
	for {
		fetches := client.PollFetches(ctx)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			client.AllowRebalance()
			return nil
		}
		var done []*kgo.Record
		var failed error
		rewind := map[string]map[int32]kgo.EpochOffset{}
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			for _, r := range p.Records {
				if failed == nil {
					if err := fn(ctx, Message{Record: r}); err != nil {
						failed = fmt.Errorf("kafkasink: record %s/%d@%d (event %s): %w",
							r.Topic, r.Partition, r.Offset, Message{Record: r}.EventID(), err)
					} else {
						done = append(done, r)
						continue
					}
				}
				// The first record of this partition not handled: where to resume.
				if rewind[r.Topic] == nil {
					rewind[r.Topic] = map[int32]kgo.EpochOffset{}
				}
				rewind[r.Topic][r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset}
				return
			}
		})
		var commitErr error
		if len(done) > 0 {
			// The commit's context outlives ctx: an effect that happened should be recorded.
			commitErr = client.CommitRecords(context.WithoutCancel(ctx), done...)
		}
		if failed != nil {
			client.SetOffsets(rewind)
		}
		client.AllowRebalance()
		switch {
		case failed != nil:
			return errors.Join(failed, commitErr)
		case commitErr != nil:
			return fmt.Errorf("kafkasink: commit offsets: %w", commitErr)
		}
	}
}

// Package kafkainbox consumes the Kafka records kafkasink produced, committing a
// record's offset only after the application's effect for it has succeeded: Consume
// polls a consumer group client, hands each record to a callback, one at a time in each
// partition's order, and commits what the callback completed.
//
// What becomes of a record:
//
//	callback returned nil                   offset committed (with the poll's others)
//	callback failed                         not committed: the client is rewound to it, Consume
//	                                        returns the error, and the next Consume hands it over first
//	effect applied, commit lost             handed over again (a rebalance, a restart)
//
// So the callback must be idempotent. An inbox inside it, keyed by Message.EventID (the
// Outbox-Id header, kafkasink.HeaderID), makes each event's effect happen once:
//
//	err := kafkainbox.Consume(ctx, client, func(ctx context.Context, m kafkainbox.Message) error {
//		_, err := ib.Process(ctx, m.EventID(), func(tx *sql.Tx) error { return apply(ctx, tx, m) })
//		return err
//	})
//
// Consume has no settings of its own: the kgo client carries them (kgo.ConsumerGroup,
// kgo.ConsumeTopics, kgo.DisableAutoCommit, which Consume requires, and
// kgo.BlockRebalanceOnPoll, which is recommended).
package kafkainbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/kafkasink"
)

// Message is one record as Consume hands it to its callback.
type Message struct {
	Record *kgo.Record
}

// EventID returns the Outbox-Id header (kafkasink.HeaderID): the ID of the event the
// record carries, to deduplicate on. It is empty for a record the sink did not produce.
func (m Message) EventID() string { return m.Header(kafkasink.HeaderID) }

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
		return env, fmt.Errorf("kafkainbox: record %s/%d@%d is not an outbox envelope: %w",
			m.Record.Topic, m.Record.Partition, m.Record.Offset, err)
	}
	return env, nil
}

// ErrAutoCommit is returned by Consume for a client that would commit offsets on its
// own, before the callback has succeeded.
var ErrAutoCommit = errors.New("kafkainbox: Consume needs a consumer group client with kgo.DisableAutoCommit")

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
						failed = fmt.Errorf("kafkainbox: record %s/%d@%d (event %s): %w",
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
			return fmt.Errorf("kafkainbox: commit offsets: %w", commitErr)
		}
	}
}

package outboxtest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

// EnqueueN writes n events to s, 1000 to a transaction: two types (every third an
// order_shipped, the rest order_created), seven users, a small JSON payload each.
// It returns the set of their IDs, for checking what a sink delivered.
func EnqueueN(t testing.TB, s outbox.Store, n int) map[string]bool {
	t.Helper()
	ids := make(map[string]bool, n)
	for start := 0; start < n; start += 1000 {
		var batch []*outbox.Event
		for i := start; i < min(start+1000, n); i++ {
			typ := "order_created"
			if i%3 == 0 {
				typ = "order_shipped"
			}
			e := outbox.NewEvent(typ, fmt.Sprintf("entity-%d", i), fmt.Sprintf("user-%d", i%7))
			e.Payload = json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))
			batch = append(batch, e)
		}
		if err := s.Enqueue(context.Background(), time.Now(), batch...); err != nil {
			t.Fatal(err)
		}
		for _, e := range batch {
			ids[e.ID] = true
		}
	}
	return ids
}

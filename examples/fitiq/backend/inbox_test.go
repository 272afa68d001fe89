package backend_test

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/examples/fitiq/backend"
)

func keyed(t *testing.T, method, url, key string, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, data}
}

// Writes sent with an event ID go through the inbox: a replayed event is answered as
// the entity stands, marked as a replay; a refused write (425, before its create)
// does not record the ID, so the event applies when it comes again.
func TestEventsThroughInbox(t *testing.T) {
	dialects(t, func(t *testing.T, db *backend.DB) {
		_, base := serve(t, db, backend.Config{})
		now := time.Now()
		id := uuid.NewString()
		list := base + fitiq.EntityPath("alice", fitiq.KindProgressEntry, "")
		item := base + fitiq.EntityPath("alice", fitiq.KindProgressEntry, id)
		createEvent, updateEvent := uuid.Must(uuid.NewV7()).String(), uuid.Must(uuid.NewV7()).String()

		if a := keyed(t, "PUT", item, updateEvent, mustJSON(t, weight(id, 2, 71, now))); a.status != http.StatusTooEarly {
			t.Fatalf("update before its create: %d %s, want 425", a.status, a.body)
		}
		if a := keyed(t, "POST", list, createEvent, mustJSON(t, weight(id, 1, 72, now))); a.status != http.StatusCreated {
			t.Fatalf("create: %d %s", a.status, a.body)
		}
		a := keyed(t, "POST", list, createEvent, mustJSON(t, weight(id, 1, 72, now)))
		if a.status != http.StatusConflict || a.header.Get("Idempotent-Replayed") != "true" || a.record(t).ID != id {
			t.Fatalf("replayed create: %d %q %s; want the entity-level 409 with the record, marked a replay", a.status, a.header.Get("Idempotent-Replayed"), a.body)
		}
		for i, replayed := range []string{"", "true"} {
			a := keyed(t, "PUT", item, updateEvent, mustJSON(t, weight(id, 2, 71, now)))
			if a.status != http.StatusOK || a.header.Get("Idempotent-Replayed") != replayed || a.record(t).Version != 2 {
				t.Fatalf("update delivery %d: %d %q %s; want 200 with version 2, replayed %q", i+1, a.status, a.header.Get("Idempotent-Replayed"), a.body, replayed)
			}
		}
	})
}

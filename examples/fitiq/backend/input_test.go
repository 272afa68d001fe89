package backend_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/examples/fitiq/backend"
)

// The upper-case spelling of an existing client ID is the same entity: a replayed
// create of it is a 409, an update through it applies, a read through it finds it,
// and the backend holds one record.
func TestClientIDSpellingsAreOneEntity(t *testing.T) {
	dialects(t, func(t *testing.T, db *backend.DB) {
		_, base := serve(t, db, backend.Config{})
		url := base + fitiq.EntityPath("alice", fitiq.KindProgressEntry, "")
		id := uuid.NewString()
		upper := strings.ToUpper(id)
		if a := request(t, "POST", url, aliceToken, mustJSON(t, weight(id, 1, 72.5, time.Now()))); a.status != 201 {
			t.Fatalf("create: %d %s", a.status, a.body)
		}
		if a := request(t, "POST", url, aliceToken, mustJSON(t, weight(upper, 1, 72.5, time.Now()))); a.status != 409 || a.record(t).ID != id {
			t.Fatalf("create with the upper-case ID: %d %s; want 409 with the stored record", a.status, a.body)
		}
		path := base + fitiq.EntityPath("alice", fitiq.KindProgressEntry, upper)
		if a := request(t, "PUT", path, aliceToken, mustJSON(t, weight(upper, 2, 73, time.Now()))); a.status != 200 || a.record(t).Version != 2 {
			t.Fatalf("update through the upper-case ID: %d %s; want 200 at version 2", a.status, a.body)
		}
		if a := request(t, "GET", path, aliceToken, nil); a.status != 200 || a.record(t).ID != id {
			t.Fatalf("read through the upper-case ID: %d %s", a.status, a.body)
		}
		c, err := db.Count(context.Background(), "alice")
		if err != nil || c.Records != 1 {
			t.Fatalf("backend holds %+v (%v); want one record", c, err)
		}
	})
}

// The bearer scheme is case-insensitive (RFC 9110 §11.1); a body that is not UTF-8
// is refused rather than stored with U+FFFD in place of its bad bytes.
func TestAuthSchemeCaseAndInvalidUTF8(t *testing.T) {
	_, base := serve(t, openSQLite(t), backend.Config{})
	url := base + fitiq.EntityPath("alice", fitiq.KindProgressEntry, "")
	for _, scheme := range []string{"Bearer", "bearer", "BEARER", "bEaReR"} {
		req, _ := http.NewRequest("POST", url, bytes.NewReader(mustJSON(t, weight(uuid.NewString(), 1, 70, time.Now()))))
		req.Header.Set("Authorization", scheme+" "+aliceToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Errorf("scheme %q: %d %s; want 201", scheme, resp.StatusCode, body)
		}
	}
	for _, auth := range []string{"Basic " + aliceToken, "Bearer", "Bearer   ", aliceToken} {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Errorf("Authorization %q: %d, want 401", auth, resp.StatusCode)
		}
	}
	valid := mustJSON(t, weight(uuid.NewString(), 1, 70, time.Now()))
	bad := bytes.Replace(valid, []byte(`"type":"`), []byte("\"type\":\"\xff\xfe"), 1)
	if bytes.Equal(bad, valid) {
		t.Fatal("the test body has no type field to spoil")
	}
	a := request(t, "POST", url, aliceToken, bad)
	if a.status != 400 || !strings.Contains(a.errorMessage(), "not valid UTF-8") {
		t.Fatalf("invalid UTF-8: %d %s; want 400 saying so", a.status, a.body)
	}
}

package dashboard_test

import (
	"context"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
)

// t0 is when the test outbox's events are written; the tests' clocks stand at now.
var (
	t0  = time.Date(2026, 3, 4, 10, 0, 0, 0, time.UTC)
	now = t0.Add(10 * time.Minute)
)

// hostile is a payload, an error and metadata that would run script if rendered as markup.
const (
	hostilePayload = `{"note":"</pre><script>alert(1)</script>","html":"<img src=x onerror=alert(2)>"}`
	hostileError   = `503 <script>alert("err")</script>`
	hostileMeta    = `<b onmouseover=alert(3)>x</b>`
)

// outboxState is a small outbox with one event in every state the dashboard shows.
type outboxState struct {
	completed []string // 3, order.created
	pending   []string // 2, one with the hostile payload
	retrying  string   // failed, due again at t0+1h
	givenUp   []string // 2, payment.charge; the first heads key "order-7"
	blocked   string   // pending behind givenUp[0]
	stuck     string   // processing, its lease expired at t0+30s
}

func (o outboxState) all() int { return 3 + 2 + 1 + 2 + 1 + 1 }

// fillOutbox writes the events of outboxState at t0 and settles them as a relay would.
func fillOutbox(t testing.TB, s outbox.Store) outboxState {
	t.Helper()
	ctx := context.Background()
	var o outboxState
	mk := func(typ, entity, user string) *outbox.Event {
		e := outbox.NewEvent(typ, entity, user)
		e.Payload = []byte(`{"entity":"` + entity + `"}`)
		return e
	}
	c1, c2, c3 := mk("order.created", "order-1", "alice"), mk("order.created", "order-2", "alice"), mk("order.created", "order-3", "bob")
	p1, p2 := mk("order.created", "order-4", "bob"), mk("user.renamed", "user-9", "carol")
	p1.Payload = []byte(hostilePayload)
	p1.Metadata = map[string]string{"source": hostileMeta}
	r1 := mk("order.shipped", "order-5", "alice")
	g1, g2 := mk("payment.charge", "order-7", "alice"), mk("payment.charge", "order-8", "bob")
	g1.OrderingKey = "order-7"
	b1 := mk("order.shipped", "order-7", "alice")
	b1.OrderingKey = "order-7"
	s1 := mk("order.created", "order-6", "carol")
	events := []*outbox.Event{c1, c2, c3, p1, p2, r1, g1, g2, b1, s1}
	if err := s.Enqueue(ctx, t0, events...); err != nil {
		t.Fatal(err)
	}
	claimed, err := s.Claim(ctx, outbox.ClaimParams{Owner: "relay-1", Now: t0, LeaseUntil: t0.Add(30 * time.Second), Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != len(events)-1 { // b1 waits behind g1
		t.Fatalf("claimed %d events, want %d", len(claimed), len(events)-1)
	}
	at := t0.Add(time.Second)
	outcomes := []outbox.Outcome{
		{ID: c1.ID, Result: outbox.Delivered}, {ID: c2.ID, Result: outbox.Delivered}, {ID: c3.ID, Result: outbox.Delivered},
		{ID: p1.ID, Result: outbox.Released}, {ID: p2.ID, Result: outbox.Released},
		{ID: r1.ID, Result: outbox.Failed, Error: "connection refused", NextAttemptAt: t0.Add(time.Hour)},
		{ID: g1.ID, Result: outbox.Failed, Error: hostileError},
		{ID: g2.ID, Result: outbox.Failed, Error: "400 bad request"},
	}
	if err := s.Settle(ctx, "relay-1", at, outcomes); err != nil {
		t.Fatal(err)
	}
	o.completed = []string{c1.ID, c2.ID, c3.ID}
	o.pending = []string{p1.ID, p2.ID}
	o.retrying, o.givenUp, o.blocked, o.stuck = r1.ID, []string{g1.ID, g2.ID}, b1.ID, s1.ID
	return o
}

func newClock() *outboxtest.Clock { return outboxtest.NewClock(now) }

// addInFlight writes an event of type typ at now and leases it to relay-2 until a
// minute later: a processor is delivering it. It returns its ID.
func addInFlight(t testing.TB, s outbox.Store, typ, entity string) string {
	t.Helper()
	ctx := context.Background()
	e := outbox.NewEvent(typ, entity, "erin")
	e.OrderingKey = "key-" + entity
	if err := s.Enqueue(ctx, now, e); err != nil {
		t.Fatal(err)
	}
	claimed, err := s.Claim(ctx, outbox.ClaimParams{Owner: "relay-2", Now: now, LeaseUntil: now.Add(time.Minute), Limit: 1, Types: []string{typ}})
	if err != nil {
		t.Fatal(err)
	}
	if len(claimed) != 1 || claimed[0].ID != e.ID {
		t.Fatalf("claimed %d events, want the new %s alone", len(claimed), typ)
	}
	return e.ID
}

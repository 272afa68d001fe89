package metrics_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/metrics"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

// Each message's result lands in the counter, and cleanup counts what it deleted.
func TestInboxCounters(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := metrics.NewInbox(reg, metrics.InboxConfig{})
	if err != nil {
		t.Fatal(err)
	}
	db, err := sqlite.Open(filepath.Join(t.TempDir(), "receiver.db"), sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	clock := outboxtest.NewClock(outboxtest.T0)
	cfg := inbox.Config{Dialect: inbox.SQLite, Observer: m, Clock: clock}
	if _, err := inbox.Migrate(ctx, db, cfg); err != nil {
		t.Fatal(err)
	}
	ib, err := inbox.New(ctx, db, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ok := func(*sql.Tx) error { return nil }
	for _, id := range []string{"a", "a", "a", "b"} {
		if _, err := ib.Process(ctx, id, ok); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ib.Process(ctx, "c", func(*sql.Tx) error { return errors.New("boom") }); err == nil {
		t.Fatal("a failed effect returned nil")
	}
	clock.Advance(inbox.DefaultRetention + time.Second)
	if n, err := ib.Cleanup(ctx, clock.Now(), 100); err != nil || n != 2 {
		t.Fatalf("cleanup: %d, %v; want 2", n, err)
	}
	want := `
# HELP outbox_inbox_cleaned_total Processed message IDs deleted once past the retention window.
# TYPE outbox_inbox_cleaned_total counter
outbox_inbox_cleaned_total 2
# HELP outbox_inbox_messages_total Messages the inbox processed, by result: applied, duplicate (redelivery, no effect), expired (older than the window, refused), failed (rolled back).
# TYPE outbox_inbox_messages_total counter
outbox_inbox_messages_total{result="applied"} 2
outbox_inbox_messages_total{result="duplicate"} 2
outbox_inbox_messages_total{result="expired"} 0
outbox_inbox_messages_total{result="failed"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "outbox_inbox_messages_total", "outbox_inbox_cleaned_total"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(reg, "outbox_inbox_process_duration_seconds"); err != nil || n != 3 {
		t.Fatalf("%d duration series (%v), want one for each result seen: applied, duplicate, failed", n, err)
	}
	if got := ib.Stats(); got != (inbox.Stats{Applied: 2, Duplicates: 2, Failed: 1, Cleaned: 2}) {
		t.Fatalf("inbox stats %+v", got)
	}
}

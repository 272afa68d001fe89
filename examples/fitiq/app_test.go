package fitiq_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/outboxtest"
)

func TestSaveWeightWritesEntryAndEventTogether(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := outboxtest.NewClock(time.Date(2025, 1, 31, 9, 30, 0, 0, time.UTC))
	app := newApp(t, clock)
	date := clock.Now().Add(-time.Hour)

	id, err := fitiq.SaveWeightProgressUseCase{App: app}.Execute(ctx, 72.5, date)
	if err != nil {
		t.Fatal(err)
	}
	e, err := app.Local().Get(ctx, fitiq.KindProgressEntry, id)
	if err != nil {
		t.Fatal(err)
	}
	entry := e.(*fitiq.ProgressEntry)
	if entry.Type != fitiq.ProgressWeight || entry.Quantity != 72.5 || !entry.Date.Equal(date) ||
		entry.UserID != user || entry.Version != 1 || entry.SyncStatus != fitiq.SyncPending || entry.BackendID != "" {
		t.Fatalf("saved entry %+v", entry)
	}
	events, err := app.Store().List(ctx, outbox.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 {
		t.Fatalf("%d events, want 1", len(events))
	}
	ev := events[0]
	want := map[string]any{
		"type": fitiq.TypeProgressEntry, "entity": id, "user": user, "status": outbox.StatusPending,
		"priority": 10, "new": true, "key": id, "source": "manual_entry", "app_version": fitiq.Version, "entity_version": "1",
	}
	got := map[string]any{
		"type": ev.Type, "entity": ev.EntityID, "user": ev.UserID, "status": ev.Status,
		"priority": ev.Priority, "new": ev.IsNewRecord, "key": ev.OrderingKey, "source": ev.Metadata["source"],
		"app_version": ev.Metadata["app_version"], "entity_version": ev.Metadata["entity_version"],
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("event %s = %v, want %v", k, got[k], w)
		}
	}

	// An update of the same entry: IsNewRecord false, version 2, same ordering key.
	clock.Advance(time.Minute)
	upd, err := fitiq.SaveProgressEntryUseCase{App: app}.Execute(ctx, fitiq.ProgressEntry{
		Record: fitiq.Record{ID: id}, Type: fitiq.ProgressWeight, Quantity: 72.1, Date: date})
	if err != nil {
		t.Fatal(err)
	}
	events, _ = app.Store().List(ctx, outbox.Filter{})
	if upd.Version != 2 || len(events) != 2 || events[1].IsNewRecord || events[1].OrderingKey != id || events[1].Metadata["entity_version"] != "2" {
		t.Fatalf("after the update: entry version %d, events %+v; want version 2 and a second, not-new event keyed %s", upd.Version, events, id)
	}
	if !upd.CreatedAt.Equal(entry.CreatedAt) || !upd.UpdatedAt.After(entry.UpdatedAt) {
		t.Fatalf("update kept created %v → %v, updated %v → %v", entry.CreatedAt, upd.CreatedAt, entry.UpdatedAt, upd.UpdatedAt)
	}
}

func TestSaveRejectsBadInputAndWritesNothing(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 31, 9, 30, 0, 0, time.UTC)
	day := now.Add(-24 * time.Hour)
	cases := []struct {
		name  string
		save  func(context.Context, *fitiq.App) error
		field string
	}{
		{"weight out of range", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveWeightProgressUseCase{App: a}.Execute(ctx, 7250, day)
			return err
		}, "quantity"},
		{"weight not a number", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveWeightProgressUseCase{App: a}.Execute(ctx, math.NaN(), day)
			return err
		}, "quantity"},
		{"no date", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveWeightProgressUseCase{App: a}.Execute(ctx, 70, time.Time{})
			return err
		}, "date"},
		{"date next week", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveWeightProgressUseCase{App: a}.Execute(ctx, 70, now.AddDate(0, 0, 7))
			return err
		}, "date"},
		{"fractional steps", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveProgressEntryUseCase{App: a}.Execute(ctx, fitiq.ProgressEntry{Type: fitiq.ProgressSteps, Quantity: 10.5, Date: day})
			return err
		}, "quantity"},
		{"unknown progress type", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveProgressEntryUseCase{App: a}.Execute(ctx, fitiq.ProgressEntry{Type: "mood", Quantity: 3, Date: day})
			return err
		}, "type"},
		{"id not a UUID", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveProgressEntryUseCase{App: a}.Execute(ctx, fitiq.ProgressEntry{Record: fitiq.Record{ID: "entry-1"}, Type: fitiq.ProgressWeight, Quantity: 70, Date: day})
			return err
		}, "id"},
		{"notes too long", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveProgressEntryUseCase{App: a}.Execute(ctx, fitiq.ProgressEntry{Type: fitiq.ProgressWeight, Quantity: 70, Date: day, Notes: strings.Repeat("é", 501)})
			return err
		}, "notes"},
		{"unknown attribute", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SavePhysicalAttributeUseCase{App: a}.Execute(ctx, fitiq.PhysicalAttribute{Attribute: "shoe", Value: 42, MeasuredAt: day})
			return err
		}, "attribute"},
		{"waist out of range", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SavePhysicalAttributeUseCase{App: a}.Execute(ctx, fitiq.PhysicalAttribute{Attribute: fitiq.AttributeWaist, Value: 900, MeasuredAt: day})
			return err
		}, "value"},
		{"negative steps in a snapshot", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveActivitySnapshotUseCase{App: a}.Execute(ctx, fitiq.ActivitySnapshot{Date: day, Steps: -1})
			return err
		}, "steps"},
		{"more active minutes than a day has", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveActivitySnapshotUseCase{App: a}.Execute(ctx, fitiq.ActivitySnapshot{Date: day, ActiveMinutes: 1441})
			return err
		}, "active_minutes"},
		{"profile without a name", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveProfileMetadataUseCase{App: a}.Execute(ctx, fitiq.ProfileMetadata{Name: "  ", UnitSystem: fitiq.UnitsMetric, Language: "en"})
			return err
		}, "name"},
		{"unknown unit system", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveProfileMetadataUseCase{App: a}.Execute(ctx, fitiq.ProfileMetadata{Name: "Ada", UnitSystem: "cubits", Language: "en"})
			return err
		}, "unit_system"},
		{"bad language tag", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveProfileMetadataUseCase{App: a}.Execute(ctx, fitiq.ProfileMetadata{Name: "Ada", UnitSystem: fitiq.UnitsMetric, Language: "en_US!"})
			return err
		}, "language"},
		{"born last month", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveProfilePhysicalUseCase{App: a}.Execute(ctx, fitiq.ProfilePhysical{BiologicalSex: fitiq.SexFemale, HeightCm: 168, DateOfBirth: now.AddDate(0, -1, 0)})
			return err
		}, "date_of_birth"},
		{"unknown sex", func(ctx context.Context, a *fitiq.App) error {
			_, err := fitiq.SaveProfilePhysicalUseCase{App: a}.Execute(ctx, fitiq.ProfilePhysical{BiologicalSex: "x", HeightCm: 168, DateOfBirth: day.AddDate(-30, 0, 0)})
			return err
		}, "biological_sex"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			app := newApp(t, outboxtest.NewClock(now))
			err := c.save(ctx, app)
			var fe *fitiq.FieldError
			if !errors.As(err, &fe) || fe.Field != c.field || !errors.Is(err, fitiq.ErrInvalid) {
				t.Fatalf("got %v, want a FieldError naming %q", err, c.field)
			}
			assertNothingWritten(t, app)
		})
	}
}

func assertNothingWritten(t *testing.T, app *fitiq.App) {
	t.Helper()
	ctx := context.Background()
	counts, err := app.Local().SyncCounts(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for k, c := range counts {
		if c.Total != 0 {
			t.Errorf("%d %s written", c.Total, k)
		}
	}
	if events, _ := app.Store().List(ctx, outbox.Filter{}); len(events) != 0 {
		t.Errorf("%d events written", len(events))
	}
}

// When the event cannot be written, the entry is not written either: the seed's
// transaction safety, with the failure made real inside SQLite.
func TestSaveRollsBackTheEntryWhenTheEventFails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := newApp(t, nil)
	if _, err := app.Store().DB().ExecContext(ctx, `
CREATE TRIGGER outbox_full BEFORE INSERT ON outbox_events
BEGIN SELECT RAISE(ABORT, 'disk full'); END`); err != nil {
		t.Fatal(err)
	}
	_, err := fitiq.SaveWeightProgressUseCase{App: app}.Execute(ctx, 72.5, time.Now())
	if err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("save with a failing outbox: %v, want the insert's error", err)
	}
	assertNothingWritten(t, app)
}

func TestProfilesAreOnePerUser(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := newApp(t, nil)
	uc := fitiq.SaveProfileMetadataUseCase{App: app}
	first, err := uc.Execute(ctx, fitiq.ProfileMetadata{Name: "Ada", UnitSystem: fitiq.UnitsMetric, Language: "en"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := uc.Execute(ctx, fitiq.ProfileMetadata{Name: "Ada L.", UnitSystem: fitiq.UnitsImperial, Language: "en-GB"})
	if err != nil {
		t.Fatal(err)
	}
	if second.ID != first.ID || second.Version != 2 {
		t.Fatalf("second save: ID %s version %d; want an update of %s to version 2", second.ID, second.Version, first.ID)
	}
	events, _ := app.Store().List(ctx, outbox.Filter{})
	if len(events) != 2 || !events[0].IsNewRecord || events[1].IsNewRecord || events[1].Type != fitiq.TypeProfileMetadata {
		t.Fatalf("events %+v; want a create then an update", events)
	}
}

func TestSaveAnotherUsersEntityIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := newApp(t, nil)
	id, err := fitiq.SaveWeightProgressUseCase{App: app}.Execute(ctx, 70, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	bob, err := fitiq.NewApp(ctx, app.Store(), fitiq.Config{UserID: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = fitiq.SaveProgressEntryUseCase{App: bob}.Execute(ctx, fitiq.ProgressEntry{
		Record: fitiq.Record{ID: id}, Type: fitiq.ProgressWeight, Quantity: 50, Date: time.Now()})
	if !errors.Is(err, fitiq.ErrNotFound) {
		t.Fatalf("bob saving alice's entry: %v, want ErrNotFound", err)
	}
	e, _ := app.Local().Get(ctx, fitiq.KindProgressEntry, id)
	if e.(*fitiq.ProgressEntry).Quantity != 70 {
		t.Fatal("bob overwrote alice's entry")
	}
}

func TestNewAppValidatesConfig(t *testing.T) {
	t.Parallel()
	app := newApp(t, nil)
	for _, c := range []struct {
		cfg   fitiq.Config
		field string
	}{
		{fitiq.Config{}, "Config.UserID"},
		{fitiq.Config{UserID: strings.Repeat("u", 300)}, "Config.UserID"},
	} {
		_, err := fitiq.NewApp(context.Background(), app.Store(), c.cfg)
		var fe *fitiq.FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("NewApp(%+v): %v, want an error naming %s", c.cfg, err, c.field)
		}
	}
}

// MarkSynced does not mark a newer local version synced: the save that happened while
// the older one was in flight keeps the entity pending until its own event delivers.
func TestMarkSyncedKeepsANewerVersionPending(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	app := newApp(t, nil)
	id, _ := fitiq.SaveWeightProgressUseCase{App: app}.Execute(ctx, 70, time.Now())
	if _, err := (fitiq.SaveProgressEntryUseCase{App: app}).Execute(ctx, fitiq.ProgressEntry{
		Record: fitiq.Record{ID: id}, Type: fitiq.ProgressWeight, Quantity: 71, Date: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := app.Local().MarkSynced(ctx, fitiq.KindProgressEntry, id, "b-1", 1); err != nil {
		t.Fatal(err)
	}
	e, _ := app.Local().Get(ctx, fitiq.KindProgressEntry, id)
	if b := e.Base(); b.SyncStatus != fitiq.SyncPending || b.BackendID != "b-1" {
		t.Fatalf("after version 1 synced with version 2 saved: %q %q; want pending with the backend ID", b.SyncStatus, b.BackendID)
	}
	if err := app.Local().MarkSynced(ctx, fitiq.KindProgressEntry, id, "b-1", 2); err != nil {
		t.Fatal(err)
	}
	e, _ = app.Local().Get(ctx, fitiq.KindProgressEntry, id)
	if e.Base().SyncStatus != fitiq.SyncSynced {
		t.Fatalf("after version 2 synced: %q, want synced", e.Base().SyncStatus)
	}
}

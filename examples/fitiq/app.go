package fitiq

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sqlite"
)

// Version is the app version recorded in each event's metadata.
const Version = "1.0.0"

// The seed's priorities: user-initiated saves go ahead of background sync.
const (
	PriorityUserInitiated = 10
	PriorityBackground    = 0
)

// Config is the signed-in user's app.
type Config struct {
	// UserID is the user whose entries the app saves. Required.
	UserID string
	// AppVersion goes into each event's metadata. Defaults to Version.
	AppVersion string
	// Source goes into each event's metadata: where the entry came from ("manual_entry",
	// "healthkit"). Defaults to "manual_entry".
	Source string
	// Device goes into each event's metadata. Defaults to the host name.
	Device string
	// Background marks saves as background sync (priority 0) instead of user-initiated
	// (priority 10). Defaults to false.
	Background bool
	// Clock dates saves. Defaults to outbox.SystemClock.
	Clock outbox.Clock
	// TracerProvider makes the span of each save, under which its event is enqueued.
	// Defaults to otel.GetTracerProvider() (no spans until the program sets one).
	TracerProvider trace.TracerProvider
}

func (c Config) withDefaults() Config {
	c.AppVersion = cmp.Or(c.AppVersion, Version)
	c.Source = cmp.Or(c.Source, "manual_entry")
	if c.Device == "" {
		host, _ := os.Hostname()
		c.Device = cmp.Or(host, "unknown")
	}
	if c.Clock == nil {
		c.Clock = outbox.SystemClock
	}
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	return c
}

func (c Config) validate() error {
	if c.UserID == "" {
		return fieldErr("Config.UserID", "must not be empty")
	}
	if len(c.UserID) > outbox.MaxFieldLength {
		return fieldErr("Config.UserID", "is %d bytes, over the limit of %d", len(c.UserID), outbox.MaxFieldLength)
	}
	return nil
}

// App is the client side of FitIQ for one user: the local repositories and the outbox
// store on one SQLite database. Its use cases write an entity and the event that
// announces it in one transaction.
type App struct {
	store *sqlite.Store
	local *Local
	cfg   Config

	tracer trace.Tracer
}

// NewApp returns the app of cfg.UserID on store, whose database must carry both the
// outbox tables (sqlite.Migrate) and FitIQ's (Migrate).
func NewApp(ctx context.Context, store *sqlite.Store, cfg Config) (*App, error) {
	if store == nil {
		return nil, fieldErr("store", "must not be nil")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	local, err := NewLocal(ctx, store.DB())
	if err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &App{store: store, local: local, cfg: cfg, tracer: cfg.TracerProvider.Tracer("github.com/fitiq/outbox/examples/fitiq")}, nil
}

// Local returns the app's local repositories.
func (a *App) Local() *Local { return a.local }

// Store returns the app's outbox store.
func (a *App) Store() *sqlite.Store { return a.store }

// UserID is the user the app saves for.
func (a *App) UserID() string { return a.cfg.UserID }

// save validates e and writes it with its outbox event in one transaction: both are
// committed, or neither. A new ID (UUIDv7) is assigned when e has none; an entity that
// already exists is updated (IsNewRecord false) and its version incremented. Profiles
// are one per user: saving one when the user has it already updates that one.
func (a *App) save(ctx context.Context, e Entity) (err error) {
	ctx, span := a.tracer.Start(ctx, "save "+string(e.Kind()), trace.WithAttributes(attribute.String("fitiq.user_id", a.cfg.UserID)))
	defer func() {
		span.SetAttributes(attribute.String("fitiq.entity_id", e.Base().ID))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	now := outbox.Timestamp(a.cfg.Clock.Now())
	r := e.Base()
	r.UserID = a.cfg.UserID
	if r.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("fitiq: new ID: %w", err)
		}
		r.ID = id.String()
	}
	normalize(e)
	r.Version = max(r.Version, 1) // the transaction assigns the real one; Validate wants one
	if err := e.Validate(now); err != nil {
		return err
	}
	k := e.Kind()
	priority := PriorityUserInitiated
	if a.cfg.Background {
		priority = PriorityBackground
	}
	return a.store.Transact(ctx, func(tx *sql.Tx) error {
		if k == KindProfileMetadata || k == KindProfilePhysical {
			existing, err := a.local.profileID(ctx, tx, k, r.UserID)
			if err != nil {
				return err
			}
			if existing != "" {
				r.ID = existing // "save my profile": the user has one, so this updates it
			}
		}
		isNew, err := a.local.save(ctx, tx, e, now)
		if err != nil {
			return err
		}
		ev := outbox.NewEvent(k.EventType(), r.ID, r.UserID)
		ev.Priority = priority
		ev.IsNewRecord = isNew
		// The entity ID orders its events: an update is never delivered before its create.
		ev.OrderingKey = r.ID
		ev.Metadata = map[string]string{
			"source":         a.cfg.Source,
			"app_version":    a.cfg.AppVersion,
			"device":         a.cfg.Device,
			"entity_version": strconv.FormatInt(r.Version, 10),
		}
		return a.store.EnqueueTx(ctx, tx, ev)
	})
}

// normalize brings times to what the database keeps (microseconds, UTC) and days to
// their midnight, so that what is read back, locally and remotely, equals what was saved.
func normalize(e Entity) {
	day := func(t time.Time) time.Time {
		y, m, d := t.UTC().Date()
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	}
	switch v := e.(type) {
	case *ProgressEntry:
		v.Date = outbox.Timestamp(v.Date)
	case *PhysicalAttribute:
		v.MeasuredAt = outbox.Timestamp(v.MeasuredAt)
	case *ActivitySnapshot:
		if !v.Date.IsZero() {
			v.Date = day(v.Date)
		}
	case *ProfilePhysical:
		if !v.DateOfBirth.IsZero() {
			v.DateOfBirth = day(v.DateOfBirth)
		}
	}
}

func saveAs[T any, P interface {
	*T
	Entity
}](ctx context.Context, a *App, e T) (T, error) {
	if a == nil {
		var zero T
		return zero, fieldErr("App", "must not be nil")
	}
	if err := a.save(ctx, P(&e)); err != nil {
		var zero T
		return zero, err
	}
	return e, nil
}

// SaveWeightProgressUseCase is the seed's use case: the user logs a weight.
type SaveWeightProgressUseCase struct{ App *App }

// Execute saves weight (kg) measured at date as a new progress entry, with its outbox
// event, in one transaction, and returns the entry's ID.
func (uc SaveWeightProgressUseCase) Execute(ctx context.Context, weight float64, date time.Time) (string, error) {
	e, err := SaveProgressEntryUseCase(uc).Execute(ctx, ProgressEntry{Type: ProgressWeight, Quantity: weight, Date: date})
	return e.ID, err
}

// SaveProgressEntryUseCase saves a progress entry of any type: a create when e.ID is
// empty or unknown, an update of the existing entry otherwise.
type SaveProgressEntryUseCase struct{ App *App }

// Execute validates e and saves it with its outbox event in one transaction, and
// returns it as saved (ID, version, times).
func (uc SaveProgressEntryUseCase) Execute(ctx context.Context, e ProgressEntry) (ProgressEntry, error) {
	return saveAs(ctx, uc.App, e)
}

// SavePhysicalAttributeUseCase saves a body measurement.
type SavePhysicalAttributeUseCase struct{ App *App }

// Execute validates a and saves it with its outbox event in one transaction.
func (uc SavePhysicalAttributeUseCase) Execute(ctx context.Context, a PhysicalAttribute) (PhysicalAttribute, error) {
	return saveAs(ctx, uc.App, a)
}

// SaveActivitySnapshotUseCase saves a day's activity summary.
type SaveActivitySnapshotUseCase struct{ App *App }

// Execute validates s and saves it with its outbox event in one transaction.
func (uc SaveActivitySnapshotUseCase) Execute(ctx context.Context, s ActivitySnapshot) (ActivitySnapshot, error) {
	return saveAs(ctx, uc.App, s)
}

// SaveProfileMetadataUseCase saves the user's profile (name, units, language). The
// first save creates it; later ones update it, whatever ID they carry.
type SaveProfileMetadataUseCase struct{ App *App }

// Execute validates p and saves it with its outbox event in one transaction.
func (uc SaveProfileMetadataUseCase) Execute(ctx context.Context, p ProfileMetadata) (ProfileMetadata, error) {
	return saveAs(ctx, uc.App, p)
}

// SaveProfilePhysicalUseCase saves the user's physical profile (sex, height, birth
// date). The first save creates it; later ones update it.
type SaveProfilePhysicalUseCase struct{ App *App }

// Execute validates p and saves it with its outbox event in one transaction.
func (uc SaveProfilePhysicalUseCase) Execute(ctx context.Context, p ProfilePhysical) (ProfilePhysical, error) {
	return saveAs(ctx, uc.App, p)
}

package fitiq

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// The local SQL, in plain sight: one table per kind, each with the same bookkeeping
// columns (id, user_id, version, sync_status, backend_id, created_at, updated_at) and
// its own. Parameters are named; times are Unix microseconds.

const recordColumns = `id, user_id, version, sync_status, coalesce(backend_id, ''), created_at, updated_at`

const (
	insertProgressEntry = `
INSERT INTO progress_entries (id, user_id, type, quantity, date, notes, version, sync_status, created_at, updated_at)
VALUES (:id, :user_id, :type, :quantity, :date, :notes, :version, 'pending', :now, :now)`
	updateProgressEntry = `
UPDATE progress_entries
SET type = :type, quantity = :quantity, date = :date, notes = :notes,
    version = :version, sync_status = 'pending', updated_at = :now
WHERE id = :id`
	selectProgressEntry = `SELECT ` + recordColumns + `, type, quantity, date, notes FROM progress_entries`
	listProgressEntries = selectProgressEntry + ` WHERE (:user_id = '' OR user_id = :user_id) ORDER BY date DESC, id LIMIT :limit`
)

const (
	insertPhysicalAttribute = `
INSERT INTO physical_attributes (id, user_id, attribute, value, measured_at, notes, version, sync_status, created_at, updated_at)
VALUES (:id, :user_id, :attribute, :value, :measured_at, :notes, :version, 'pending', :now, :now)`
	updatePhysicalAttribute = `
UPDATE physical_attributes
SET attribute = :attribute, value = :value, measured_at = :measured_at, notes = :notes,
    version = :version, sync_status = 'pending', updated_at = :now
WHERE id = :id`
	selectPhysicalAttribute = `SELECT ` + recordColumns + `, attribute, value, measured_at, notes FROM physical_attributes`
	listPhysicalAttributes  = selectPhysicalAttribute + ` WHERE (:user_id = '' OR user_id = :user_id) ORDER BY measured_at DESC, id LIMIT :limit`
)

const (
	insertActivitySnapshot = `
INSERT INTO activity_snapshots (id, user_id, date, steps, active_minutes, calories_burned, distance_meters, avg_heart_rate,
    version, sync_status, created_at, updated_at)
VALUES (:id, :user_id, :date, :steps, :active_minutes, :calories_burned, :distance_meters, :avg_heart_rate,
    :version, 'pending', :now, :now)`
	updateActivitySnapshot = `
UPDATE activity_snapshots
SET date = :date, steps = :steps, active_minutes = :active_minutes, calories_burned = :calories_burned,
    distance_meters = :distance_meters, avg_heart_rate = :avg_heart_rate,
    version = :version, sync_status = 'pending', updated_at = :now
WHERE id = :id`
	selectActivitySnapshot = `SELECT ` + recordColumns + `, date, steps, active_minutes, calories_burned, distance_meters, avg_heart_rate
FROM activity_snapshots`
	listActivitySnapshots = selectActivitySnapshot + ` WHERE (:user_id = '' OR user_id = :user_id) ORDER BY date DESC, id LIMIT :limit`
)

const (
	insertProfileMetadata = `
INSERT INTO profile_metadata (id, user_id, name, bio, unit_system, language, version, sync_status, created_at, updated_at)
VALUES (:id, :user_id, :name, :bio, :unit_system, :language, :version, 'pending', :now, :now)`
	updateProfileMetadata = `
UPDATE profile_metadata
SET name = :name, bio = :bio, unit_system = :unit_system, language = :language,
    version = :version, sync_status = 'pending', updated_at = :now
WHERE id = :id`
	selectProfileMetadata = `SELECT ` + recordColumns + `, name, bio, unit_system, language FROM profile_metadata`
	listProfileMetadata   = selectProfileMetadata + ` WHERE (:user_id = '' OR user_id = :user_id) ORDER BY updated_at DESC, id LIMIT :limit`
)

const (
	insertProfilePhysical = `
INSERT INTO profile_physical (id, user_id, biological_sex, height_cm, date_of_birth, version, sync_status, created_at, updated_at)
VALUES (:id, :user_id, :biological_sex, :height_cm, :date_of_birth, :version, 'pending', :now, :now)`
	updateProfilePhysical = `
UPDATE profile_physical
SET biological_sex = :biological_sex, height_cm = :height_cm, date_of_birth = :date_of_birth,
    version = :version, sync_status = 'pending', updated_at = :now
WHERE id = :id`
	selectProfilePhysical = `SELECT ` + recordColumns + `, biological_sex, height_cm, date_of_birth FROM profile_physical`
	listProfilePhysical   = selectProfilePhysical + ` WHERE (:user_id = '' OR user_id = :user_id) ORDER BY updated_at DESC, id LIMIT :limit`
)

// table is how one kind is stored. The statements that differ only by table name are
// built once from the (constant) name.
type table struct {
	kind                      Kind
	insert, update, sel, list string
	lookup, byUser            string
	markSynced, markFailed    string
	syncCounts                string
	newEntity                 func() Entity
	args                      func(Entity) []any // the kind's own named arguments
	dest                      func(Entity) []any // scan targets for the kind's own columns
}

func newTable(kind Kind, name, insert, update, sel, list string, newEntity func() Entity,
	args func(Entity) []any, dest func(Entity) []any) *table {
	return &table{
		kind: kind, insert: insert, update: update, sel: sel, list: list,
		lookup: `SELECT user_id, version, created_at FROM ` + name + ` WHERE id = :id`,
		byUser: `SELECT id FROM ` + name + ` WHERE user_id = :user_id`,
		markSynced: `UPDATE ` + name + `
SET backend_id = :backend_id, sync_status = CASE WHEN version = :version THEN 'synced' ELSE sync_status END
WHERE id = :id`,
		markFailed: `UPDATE ` + name + ` SET sync_status = 'failed' WHERE id = :id AND version = :version`,
		syncCounts: `SELECT sync_status, count(*), count(backend_id) FROM ` + name + `
WHERE (:user_id = '' OR user_id = :user_id) GROUP BY sync_status`,
		newEntity: newEntity, args: args, dest: dest,
	}
}

var tables = map[Kind]*table{
	KindProgressEntry: newTable(KindProgressEntry, "progress_entries",
		insertProgressEntry, updateProgressEntry, selectProgressEntry, listProgressEntries,
		func() Entity { return &ProgressEntry{} },
		func(e Entity) []any {
			p := e.(*ProgressEntry)
			return []any{sql.Named("type", string(p.Type)), sql.Named("quantity", p.Quantity),
				sql.Named("date", p.Date.UnixMicro()), sql.Named("notes", p.Notes)}
		},
		func(e Entity) []any {
			p := e.(*ProgressEntry)
			return []any{(*string)(&p.Type), &p.Quantity, microTime{&p.Date}, &p.Notes}
		}),
	KindPhysicalAttribute: newTable(KindPhysicalAttribute, "physical_attributes",
		insertPhysicalAttribute, updatePhysicalAttribute, selectPhysicalAttribute, listPhysicalAttributes,
		func() Entity { return &PhysicalAttribute{} },
		func(e Entity) []any {
			a := e.(*PhysicalAttribute)
			return []any{sql.Named("attribute", string(a.Attribute)), sql.Named("value", a.Value),
				sql.Named("measured_at", a.MeasuredAt.UnixMicro()), sql.Named("notes", a.Notes)}
		},
		func(e Entity) []any {
			a := e.(*PhysicalAttribute)
			return []any{(*string)(&a.Attribute), &a.Value, microTime{&a.MeasuredAt}, &a.Notes}
		}),
	KindActivitySnapshot: newTable(KindActivitySnapshot, "activity_snapshots",
		insertActivitySnapshot, updateActivitySnapshot, selectActivitySnapshot, listActivitySnapshots,
		func() Entity { return &ActivitySnapshot{} },
		func(e Entity) []any {
			s := e.(*ActivitySnapshot)
			return []any{sql.Named("date", s.Date.UnixMicro()), sql.Named("steps", s.Steps),
				sql.Named("active_minutes", s.ActiveMinutes), sql.Named("calories_burned", s.CaloriesBurned),
				sql.Named("distance_meters", s.DistanceMeters), sql.Named("avg_heart_rate", s.AvgHeartRate)}
		},
		func(e Entity) []any {
			s := e.(*ActivitySnapshot)
			return []any{microTime{&s.Date}, &s.Steps, &s.ActiveMinutes, &s.CaloriesBurned, &s.DistanceMeters, &s.AvgHeartRate}
		}),
	KindProfileMetadata: newTable(KindProfileMetadata, "profile_metadata",
		insertProfileMetadata, updateProfileMetadata, selectProfileMetadata, listProfileMetadata,
		func() Entity { return &ProfileMetadata{} },
		func(e Entity) []any {
			p := e.(*ProfileMetadata)
			return []any{sql.Named("name", p.Name), sql.Named("bio", p.Bio),
				sql.Named("unit_system", string(p.UnitSystem)), sql.Named("language", p.Language)}
		},
		func(e Entity) []any {
			p := e.(*ProfileMetadata)
			return []any{&p.Name, &p.Bio, (*string)(&p.UnitSystem), &p.Language}
		}),
	KindProfilePhysical: newTable(KindProfilePhysical, "profile_physical",
		insertProfilePhysical, updateProfilePhysical, selectProfilePhysical, listProfilePhysical,
		func() Entity { return &ProfilePhysical{} },
		func(e Entity) []any {
			p := e.(*ProfilePhysical)
			return []any{sql.Named("biological_sex", string(p.BiologicalSex)), sql.Named("height_cm", p.HeightCm),
				sql.Named("date_of_birth", p.DateOfBirth.UnixMicro())}
		},
		func(e Entity) []any {
			p := e.(*ProfilePhysical)
			return []any{(*string)(&p.BiologicalSex), &p.HeightCm, microTime{&p.DateOfBirth}}
		}),
}

func tableOf(k Kind) (*table, error) {
	t, ok := tables[k]
	if !ok {
		return nil, fmt.Errorf("%w: unknown kind %q", ErrInvalid, k)
	}
	return t, nil
}

type rowScanner interface{ Scan(dest ...any) error }

func (t *table) scan(row rowScanner) (Entity, error) {
	e := t.newEntity()
	r := e.Base()
	var status string
	dest := append([]any{&r.ID, &r.UserID, &r.Version, &status, &r.BackendID,
		microTime{&r.CreatedAt}, microTime{&r.UpdatedAt}}, t.dest(e)...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	r.SyncStatus = SyncStatus(status)
	return e, nil
}

func (t *table) get(ctx context.Context, db *sql.DB, id string) (Entity, error) {
	e, err := t.scan(db.QueryRowContext(ctx, t.sel+` WHERE id = :id`, sql.Named("id", id)))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s %s", ErrNotFound, t.kind, id)
	}
	if err != nil {
		return nil, fmt.Errorf("fitiq: get %s %s: %w", t.kind, id, err)
	}
	return e, nil
}

// microTime scans a Unix-microsecond column into a time.Time (UTC).
type microTime struct{ t *time.Time }

func (m microTime) Scan(src any) error {
	switch v := src.(type) {
	case int64:
		*m.t = time.UnixMicro(v).UTC()
		return nil
	case nil:
		*m.t = time.Time{}
		return nil
	}
	return fmt.Errorf("fitiq: cannot scan %T into a time", src)
}

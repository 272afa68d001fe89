// Package fitiq is the seed's application: a health tracker that saves entries in a
// local SQLite database and syncs them to its backend through the outbox.
//
// The five synced entities (progress entries, physical attributes, activity snapshots,
// profile metadata and profile physical data) are plain structs shared by the client
// and the remote API (package fitiq/backend decodes and validates the same types).
// Each is saved by a use case that writes the entity and its outbox event in one
// transaction, and delivered by a sync handler that reads the entity from the local
// database at delivery time, sends it, and records the backend ID it got back.
package fitiq

import (
	"errors"
	"fmt"
	"time"
)

// The outbox event types of the five synced kinds, as the original design names them.
const (
	TypeProgressEntry     = "progressEntry"
	TypePhysicalAttribute = "physicalAttribute"
	TypeActivitySnapshot  = "activitySnapshot"
	TypeProfileMetadata   = "profileMetadata"
	TypeProfilePhysical   = "profilePhysical"
)

// Kind names one of the five synced entity kinds. Its value is the path segment the
// remote API serves the kind under.
type Kind string

const (
	KindProgressEntry     Kind = "progress-entries"
	KindPhysicalAttribute Kind = "physical-attributes"
	KindActivitySnapshot  Kind = "activity-snapshots"
	KindProfileMetadata   Kind = "profile-metadata"
	KindProfilePhysical   Kind = "profile-physical"
)

// Kinds lists every kind, in the seed's order.
var Kinds = []Kind{KindProgressEntry, KindPhysicalAttribute, KindActivitySnapshot, KindProfileMetadata, KindProfilePhysical}

// EventType is the seed's outbox event type for entities of kind k.
func (k Kind) EventType() string {
	switch k {
	case KindProgressEntry:
		return TypeProgressEntry
	case KindPhysicalAttribute:
		return TypePhysicalAttribute
	case KindActivitySnapshot:
		return TypeActivitySnapshot
	case KindProfileMetadata:
		return TypeProfileMetadata
	case KindProfilePhysical:
		return TypeProfilePhysical
	}
	return ""
}

// ParseKind returns the Kind named by s (a path segment such as "progress-entries"),
// or an error listing the valid ones.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("%w: unknown kind %q (want one of %v)", ErrInvalid, s, Kinds)
}

// KindOfEventType returns the kind whose entities events of type t announce.
func KindOfEventType(t string) (Kind, bool) {
	for _, k := range Kinds {
		if k.EventType() == t {
			return k, true
		}
	}
	return "", false
}

// NewEntity returns a zero entity of kind k, ready to decode into.
func NewEntity(k Kind) (Entity, error) {
	switch k {
	case KindProgressEntry:
		return &ProgressEntry{}, nil
	case KindPhysicalAttribute:
		return &PhysicalAttribute{}, nil
	case KindActivitySnapshot:
		return &ActivitySnapshot{}, nil
	case KindProfileMetadata:
		return &ProfileMetadata{}, nil
	case KindProfilePhysical:
		return &ProfilePhysical{}, nil
	}
	return nil, fmt.Errorf("%w: unknown kind %q", ErrInvalid, k)
}

// Entity is what the five kinds have in common: a Record, a kind, validation, and the
// fields the history query filters on.
type Entity interface {
	Kind() Kind
	// Base returns the entity's common fields, for reading and writing.
	Base() *Record
	// Validate checks the entity as the user and the API see it (not its local sync
	// fields), with an error naming the offending field. now bounds dates in the future.
	Validate(now time.Time) error
	// HistoryKey is what the history query filters on: a type ("weight", "waist"; empty
	// for kinds without one) and the entity's date.
	HistoryKey() (typ string, at time.Time)
}

// SyncStatus is where an entity stands with the backend.
type SyncStatus string

const (
	// SyncPending: saved locally; its latest version has not reached the backend yet.
	SyncPending SyncStatus = "pending"
	// SyncSynced: the backend holds the latest version (and BackendID is set).
	SyncSynced SyncStatus = "synced"
	// SyncFailed: the backend refused it for good (its event was given up).
	SyncFailed SyncStatus = "failed"
)

// Record holds the fields every entity has. ID and Version travel to the backend;
// the others are local bookkeeping.
type Record struct {
	// ID is the client's UUIDv7, assigned on the first save. The backend deduplicates on it.
	ID string `json:"id"`
	// Version counts saves: 1 on create, +1 on each update. The backend keeps the highest
	// version it has seen, so a replayed older delivery never overwrites a newer one.
	Version int64 `json:"version"`

	UserID     string     `json:"-"`
	SyncStatus SyncStatus `json:"-"`
	// BackendID is the backend's identifier, written back by the sync handler.
	BackendID string    `json:"-"`
	CreatedAt time.Time `json:"-"`
	UpdatedAt time.Time `json:"-"`
}

// Base returns r; entities embed Record and so implement Entity.Base.
func (r *Record) Base() *Record { return r }

// ErrInvalid is matched by every validation error (see FieldError).
var ErrInvalid = errors.New("fitiq: invalid")

// ErrNotFound is returned when an entity does not exist (locally, or for this user).
var ErrNotFound = errors.New("fitiq: not found")

// FieldError names the field that made an entity or an argument invalid. Field is the
// JSON name, so that the API's 400 answers and the CLI's errors name the same thing.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Is makes errors.Is(err, ErrInvalid) true for every FieldError.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

package outbox

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Status is where an event stands in its life: pending → processing → completed, or
// processing → failed → (retry) processing → …, until it completes or is given up.
type Status string

const (
	// StatusPending: written, never attempted (or released unattempted). Always due.
	StatusPending Status = "pending"
	// StatusProcessing: claimed by a processor, which holds a lease on it.
	StatusProcessing Status = "processing"
	// StatusCompleted: delivered. Kept until the retention period has passed.
	StatusCompleted Status = "completed"
	// StatusFailed: the last attempt failed. With a NextAttemptAt it will be retried then;
	// without one it has been given up and waits for an operator.
	StatusFailed Status = "failed"
)

// Valid reports whether s is one of the four statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusPending, StatusProcessing, StatusCompleted, StatusFailed:
		return true
	}
	return false
}

// ParseStatus returns the Status named by s, or an error naming the valid ones.
func ParseStatus(s string) (Status, error) {
	if st := Status(s); st.Valid() {
		return st, nil
	}
	return "", fmt.Errorf("%w: unknown status %q (want pending, processing, completed or failed)", ErrInvalid, s)
}

// Limits on what an event may carry; Validate enforces them.
const (
	// DefaultMaxPayloadBytes is the payload limit stores use unless configured otherwise.
	DefaultMaxPayloadBytes = 1 << 20
	// MaxFieldLength bounds type, entity ID, user ID and ordering key.
	MaxFieldLength = 255
)

// Event is one change to announce: the row written beside the data it describes, and
// the record of every attempt to deliver it.
type Event struct {
	// ID is a UUIDv7 (time-ordered), assigned on enqueue when empty.
	ID string `json:"id"`
	// Seq is the store's insertion sequence: it, not a timestamp, orders events of one key.
	Seq int64 `json:"seq"`
	// Type names what happened ("order.created"); handlers are chosen by it. Required.
	Type string `json:"type"`
	// EntityID identifies the changed entity; receivers deduplicate on it. Required.
	EntityID string `json:"entity_id"`
	// UserID scopes the event to a user; a processor may serve one user or all.
	UserID string `json:"user_id,omitempty"`
	// Status is set by the store; enqueue always writes StatusPending.
	Status Status `json:"status"`
	// Attempts counts delivery attempts started (a claim is an attempt) in the current
	// budget: an operator's retry resets it. An attempt that could not reach the
	// destination (see Unavailable) is not counted.
	Attempts int `json:"attempts"`
	// MaxAttempts overrides the processor's RetryPolicy.MaxAttempts for this event when > 0.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// Priority orders claims among due events: higher first. An app may use, say,
	// 10 for what a user just did and 0 for background sync.
	Priority int `json:"priority"`
	// IsNewRecord tells a create (true) from an update (false).
	IsNewRecord bool `json:"is_new_record"`
	// Metadata is free-form context for debugging ("source", "app_version", …).
	Metadata map[string]string `json:"metadata,omitempty"`
	// Payload is optional JSON carried to the handler as is.
	Payload json.RawMessage `json:"payload,omitempty"`
	// OrderingKey, when set, makes events with the same key deliver one at a time in Seq
	// order. Using the entity ID means an update never overtakes its create.
	OrderingKey string `json:"ordering_key,omitempty"`

	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	LastAttemptAt time.Time `json:"last_attempt_at,omitzero"`
	// NextAttemptAt is when a failed event is due again; zero on a failed event means
	// it has been given up.
	NextAttemptAt time.Time `json:"next_attempt_at,omitzero"`
	CompletedAt   time.Time `json:"completed_at,omitzero"`

	// LastError is the error of the most recent failed attempt, or why the last attempt
	// was handed back uncounted ("held, attempt not counted: credentials rejected: …")
	// while its destination was at fault.
	LastError string `json:"last_error,omitempty"`
	// Errors is the history of failed attempts, oldest first.
	Errors []AttemptError `json:"errors,omitempty"`

	// LeaseOwner and LeaseExpiresAt are set while a processor holds the event. A
	// processing event whose lease has expired is claimable again.
	LeaseOwner     string    `json:"lease_owner,omitempty"`
	LeaseExpiresAt time.Time `json:"lease_expires_at,omitzero"`

	// Unusable, set by a store when it reads the event, says why the stored row cannot
	// be delivered as it is: a row written by SQL that breaks the contract of
	// docs/any-language.md ("metadata is not a JSON object of strings: …", a time or an
	// integer column that cannot be read). The store reads the rest of the row (the
	// field in question is left zero), so that listing and showing it work; a processor
	// gives the event up at its claim, with this reason and without calling the
	// handler. Mend the row by SQL, then retry it. Empty for every event written through
	// a Store.
	Unusable string `json:"unusable,omitempty"`
}

// AttemptError records one failed attempt.
type AttemptError struct {
	// Attempt numbers the attempt over the event's life: it goes on after an operator's
	// retry, which resets Event.Attempts (the current budget) to zero.
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Error   string    `json:"error"`
}

// NewEvent returns a pending event of the given type for an entity and user, ready to
// be enqueued. Fields such as Priority, Metadata and OrderingKey may be set before that.
func NewEvent(eventType, entityID, userID string) *Event {
	return &Event{Type: eventType, EntityID: entityID, UserID: userID}
}

// GivenUp reports whether the event failed for good: no further attempt is scheduled.
func (e *Event) GivenUp() bool {
	return e.Status == StatusFailed && e.NextAttemptAt.IsZero()
}

// EffectiveMaxAttempts is e.MaxAttempts, or def when the event does not set its own.
func (e *Event) EffectiveMaxAttempts(def int) int {
	if e.MaxAttempts > 0 {
		return e.MaxAttempts
	}
	return def
}

// IsStale reports whether the event has been due for longer than staleAfter: it is
// pending, or failed with a retry time, and that time (for a pending event, when it
// became pending) is before now-staleAfter.
func (e *Event) IsStale(now time.Time, staleAfter time.Duration) bool {
	waiting := e.Status == StatusPending || (e.Status == StatusFailed && !e.GivenUp())
	return waiting && e.NextAttemptAt.Before(now.Add(-staleAfter))
}

// ResetForRetry puts a failed (or completed) event back to pending with a fresh attempt
// budget, keeping its error history. This is what an operator's retry does.
func (e *Event) ResetForRetry(now time.Time) {
	e.Status = StatusPending
	e.Attempts = 0
	e.NextAttemptAt = now
	e.CompletedAt = time.Time{}
	e.LeaseOwner, e.LeaseExpiresAt = "", time.Time{}
	e.UpdatedAt = now
}

// Validate checks what a caller supplies, with an error that names the offending field.
// maxPayloadBytes <= 0 means DefaultMaxPayloadBytes.
func (e *Event) Validate(maxPayloadBytes int) error {
	if maxPayloadBytes <= 0 {
		maxPayloadBytes = DefaultMaxPayloadBytes
	}
	for _, f := range []struct{ name, value string }{
		{"Type", e.Type}, {"EntityID", e.EntityID},
	} {
		if f.value == "" {
			return fieldError(f.name, "must not be empty")
		}
	}
	for _, f := range []struct{ name, value string }{
		{"Type", e.Type}, {"EntityID", e.EntityID}, {"UserID", e.UserID}, {"OrderingKey", e.OrderingKey},
	} {
		if len(f.value) > MaxFieldLength {
			return fieldError(f.name, fmt.Sprintf("is %d bytes, over the limit of %d", len(f.value), MaxFieldLength))
		}
	}
	for _, f := range []struct{ name, value string }{
		{"Type", e.Type}, {"EntityID", e.EntityID}, {"UserID", e.UserID}, {"OrderingKey", e.OrderingKey},
	} {
		if !storableText(f.value) {
			return fieldError(f.name, "contains a NUL byte or invalid UTF-8")
		}
	}
	for k, v := range e.Metadata {
		if !storableText(k) || !storableText(v) {
			return fieldError("Metadata", fmt.Sprintf("entry %q contains a NUL byte or invalid UTF-8", k))
		}
	}
	if e.ID != "" {
		if _, err := uuid.Parse(e.ID); err != nil {
			return fieldError("ID", fmt.Sprintf("%q is not a UUID", e.ID))
		}
	}
	if e.Status != "" && !e.Status.Valid() {
		return fieldError("Status", fmt.Sprintf("unknown status %q", e.Status))
	}
	if e.MaxAttempts < 0 {
		return fieldError("MaxAttempts", fmt.Sprintf("must not be negative, got %d", e.MaxAttempts))
	}
	if len(e.Payload) > maxPayloadBytes {
		return fieldError("Payload", fmt.Sprintf("is %d bytes, over the limit of %d", len(e.Payload), maxPayloadBytes))
	}
	if len(e.Payload) > 0 && !json.Valid(e.Payload) {
		return fieldError("Payload", "is not valid JSON")
	}
	return nil
}

// storableText reports whether every store can keep s as text: some (PostgreSQL) refuse
// a NUL byte or invalid UTF-8, so the core refuses them for all, and an event that one
// store takes is taken by every other.
func storableText(s string) bool {
	return strings.IndexByte(s, 0) < 0 && utf8.ValidString(s)
}

// ValidateUpdate checks what Store.Update writes back: an event to write, a status a
// caller may set (not processing: only a claim leases), attempt counts not negative.
// Stores call it before they write.
func (e *Event) ValidateUpdate() error {
	if e == nil {
		return fmt.Errorf("%w: Update: event must not be nil", ErrInvalid)
	}
	if !e.Status.Valid() || e.Status == StatusProcessing {
		return fieldError("Status", fmt.Sprintf("%q cannot be written by Update (want pending, completed or failed)", e.Status))
	}
	if e.Attempts < 0 {
		return fieldError("Attempts", fmt.Sprintf("must not be negative, got %d", e.Attempts))
	}
	if e.MaxAttempts < 0 {
		return fieldError("MaxAttempts", fmt.Sprintf("must not be negative, got %d", e.MaxAttempts))
	}
	return nil
}

// Prepare validates a new event and fills what every store sets on insert: ID (when
// empty), pending status, zero attempts, timestamps. Store implementations call it
// before writing; applications need not.
func (e *Event) Prepare(now time.Time, maxPayloadBytes int) error {
	if err := e.Validate(maxPayloadBytes); err != nil {
		return err
	}
	if e.ID == "" {
		id, err := uuid.NewV7()
		if err != nil {
			return fmt.Errorf("outbox: generate event ID: %w", err)
		}
		e.ID = id.String()
	}
	// One spelling of each ID on every store, so that what the caller holds is what Get returns.
	e.ID, _ = CanonicalID(e.ID) // Validate has checked it is a UUID
	now = Timestamp(now)
	e.Status = StatusPending
	e.Attempts = 0
	e.CreatedAt, e.UpdatedAt, e.NextAttemptAt = now, now, now
	e.LastAttemptAt, e.CompletedAt, e.LeaseExpiresAt = time.Time{}, time.Time{}, time.Time{}
	e.LastError, e.Errors, e.LeaseOwner = "", nil, ""
	return nil
}

// Timestamp truncates t to the microsecond precision every store keeps, in UTC, so that
// what is read back equals what was written.
func Timestamp(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.UTC().Truncate(time.Microsecond)
}

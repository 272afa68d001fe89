package fitiq

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// The remote API, as the client and the server (package fitiq/backend) both see it.
//
//	POST /v1/users/{user}/{kind}        create; 201 with the stored record, 409 if the ID exists
//	PUT  /v1/users/{user}/{kind}/{id}   update; 200, or 425 when the backend has not seen its create
//	GET  /v1/users/{user}/{kind}/{id}   one record by the client's ID; 404 when unknown
//	GET  /v1/users/{user}/{kind}?type=&from=&to=&page=&limit=   history, most recent first
//
// Every request carries "Authorization: Bearer <token>" of the user named in the path.

// RemoteRecord is an entity as the backend stores and returns it.
type RemoteRecord struct {
	// BackendID is the backend's own identifier for the entity.
	BackendID string `json:"backend_id"`
	// ID is the client's entity ID, on which the backend deduplicates.
	ID      string `json:"id"`
	Kind    Kind   `json:"kind"`
	Version int64  `json:"version"`
	// Type and Date are the entity's history key (see Entity.HistoryKey).
	Type      string    `json:"type,omitempty"`
	Date      time.Time `json:"date,omitzero"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Data is the entity itself, as the client sent it.
	Data json.RawMessage `json:"data"`
}

// Entity decodes r.Data into an entity of r.Kind.
func (r RemoteRecord) Entity() (Entity, error) {
	e, err := NewEntity(r.Kind)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(r.Data, e); err != nil {
		return nil, fmt.Errorf("fitiq: decode %s %s: %w", r.Kind, r.ID, err)
	}
	e.Base().BackendID = r.BackendID
	return e, nil
}

// History defaults and bounds.
const (
	DefaultHistoryLimit = 20
	MaxHistoryLimit     = 100
)

// HistoryQuery is the seed's getProgressHistory(type:from:to:page:limit:), for any kind.
type HistoryQuery struct {
	// Type narrows to one type (progress entries: "weight"; physical attributes: "waist").
	Type string
	// From and To bound the entity's date, both inclusive; zero does not bound.
	From, To time.Time
	// Page is 1-based. Defaults to 1.
	Page int
	// Limit is the page size, at most 100. Defaults to 20.
	Limit int
}

// Values encodes q as URL query parameters.
func (q HistoryQuery) Values() url.Values {
	v := url.Values{}
	if q.Type != "" {
		v.Set("type", q.Type)
	}
	if !q.From.IsZero() {
		v.Set("from", q.From.UTC().Format(time.RFC3339Nano))
	}
	if !q.To.IsZero() {
		v.Set("to", q.To.UTC().Format(time.RFC3339Nano))
	}
	if q.Page != 0 {
		v.Set("page", strconv.Itoa(q.Page))
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	return v
}

// ParseHistoryQuery decodes and checks URL query parameters, filling defaults. Errors
// name the parameter.
func ParseHistoryQuery(v url.Values) (HistoryQuery, error) {
	q := HistoryQuery{Type: v.Get("type"), Page: 1, Limit: DefaultHistoryLimit}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		if s := v.Get(f.name); s != "" {
			t, err := ParseDate(s)
			if err != nil {
				return q, fieldErr(f.name, "%v", err)
			}
			*f.dst = t
		}
	}
	if !q.From.IsZero() && !q.To.IsZero() && q.From.After(q.To) {
		return q, fieldErr("from", "%s is after to (%s)", q.From.Format(time.RFC3339), q.To.Format(time.RFC3339))
	}
	for _, f := range []struct {
		name     string
		dst      *int
		min, max int
	}{{"page", &q.Page, 1, 1_000_000}, {"limit", &q.Limit, 1, MaxHistoryLimit}} {
		if s := v.Get(f.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < f.min || n > f.max {
				return q, fieldErr(f.name, "%q is not a whole number from %d to %d", s, f.min, f.max)
			}
			*f.dst = n
		}
	}
	if len(q.Type) > 64 {
		return q, fieldErr("type", "is %d bytes, over the limit of 64", len(q.Type))
	}
	return q, nil
}

// ParseDate reads a date as RFC 3339 ("2025-01-31T08:00:00Z") or a bare day
// ("2025-01-31", meaning its midnight UTC).
func ParseDate(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is not a date (want 2025-01-31 or 2025-01-31T08:00:00Z)", s)
}

// HistoryPage is one page of the history query's answer.
type HistoryPage struct {
	Items   []RemoteRecord `json:"items"`
	Page    int            `json:"page"`
	Limit   int            `json:"limit"`
	Total   int            `json:"total"`
	HasMore bool           `json:"has_more"`
}

// ErrorBody is the JSON body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// ErrConflict is matched by the API's 409 answer to a create: the backend already holds
// an entity with that ID. For a sync, that is success.
var ErrConflict = errors.New("fitiq: entity already exists at the backend")

// APIError is an answer of the remote API other than success.
type APIError struct {
	Method, Path string
	Status       int
	Message      string
	// RetryAfter is the server's Retry-After, when it sent one.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("fitiq: %s %s: %d %s", e.Method, e.Path, e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Is matches ErrConflict for 409 and ErrNotFound for 404.
func (e *APIError) Is(target error) bool {
	return target == ErrConflict && e.Status == http.StatusConflict ||
		target == ErrNotFound && e.Status == http.StatusNotFound
}

// Retryable reports whether the status is worth another attempt: 408, 425, 429 and 5xx.
// Other 4xx answers will not change by asking again.
func (e *APIError) Retryable() bool {
	switch e.Status {
	case http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests:
		return true
	}
	return e.Status >= 500 || e.Status < 400
}

// ParseRetryAfter reads a Retry-After header: delay-seconds or an HTTP date.
func ParseRetryAfter(h string, now time.Time) (time.Duration, bool) {
	if h == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(h); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(h); err == nil {
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

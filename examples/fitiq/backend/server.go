// Package backend is FitIQ's remote API: the server the app's sync handlers talk to.
// It is a plain net/http JSON API over its own database (SQLite by default, PostgreSQL
// when given a postgres:// DSN), with a bearer token per user.
//
// What it guarantees the client:
//   - Idempotent creates: the client's entity ID is the key. The same create twice
//     stores one row; the second answer is 409 Conflict with the stored record.
//   - Ordered updates: an update of an entity the backend has not seen created is
//     refused with 425 Too Early and a Retry-After (see Server.update for why), and an
//     update not newer than the stored version (a replay) changes nothing.
//   - Isolation: a request is served only under the path of the user its token
//     belongs to (401 without a valid token, 403 under another user's path), and every
//     query is scoped to that user, so another user's data is never served.
//   - Each event once: a create or update sent with an Idempotency-Key (the app sends
//     its outbox event ID) is applied in one transaction with that key, so a replayed
//     event has no second effect; the replay is answered as the entity now stands.
//   - Bounded, validated input: bodies over MaxBodyBytes, malformed JSON, unknown
//     fields and out-of-range values get 400 with a message naming the problem.
package backend

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/examples/fitiq"
	"github.com/fitiq/outbox/inbox"
	"github.com/fitiq/outbox/inbox/httpinbox"
)

// Config tunes a Server.
type Config struct {
	// MaxBodyBytes bounds a request body; a larger one is refused with 400. Defaults to 64 KiB.
	MaxBodyBytes int64
	// TooEarlyRetryAfter is the Retry-After sent with the 425 answer to an update whose
	// create has not arrived. Defaults to 1s.
	TooEarlyRetryAfter time.Duration
	// Clock dates records and bounds dates in the future. Defaults to outbox.SystemClock.
	Clock outbox.Clock
	// Logger receives one line per refused request. Defaults to slog.Default().
	Logger *slog.Logger
	// Observer, when set, is told about every request the API answered, in the
	// request's goroutine, once the answer is decided. Tests use it to see the order in
	// which creates and updates arrived.
	Observer func(Request)
	// TracerProvider makes a server span per request, a child of the trace the request
	// carries (the client's delivery attempt). Defaults to otel.GetTracerProvider().
	TracerProvider trace.TracerProvider
	// Propagator reads the trace from request headers. Defaults to otel.GetTextMapPropagator().
	Propagator propagation.TextMapPropagator
}

// Request is one answered request, as Config.Observer sees it.
type Request struct {
	Method  string
	UserID  string // the path's user
	Kind    fitiq.Kind
	ID      string // the client's entity ID, when the request names one
	Version int64  // the version sent, for creates and updates
	Status  int
}

// Stats counts what the server answered since it started.
type Stats struct {
	Created          int64 `json:"created"`
	DuplicateCreates int64 `json:"duplicate_creates"` // answered 409
	Updated          int64 `json:"updated"`
	StaleUpdates     int64 `json:"stale_updates"`     // older than the stored version: not applied
	TooEarly         int64 `json:"too_early_updates"` // answered 425: create not seen yet
	BadRequests      int64 `json:"bad_requests"`
	Unauthorized     int64 `json:"unauthorized"`
	Forbidden        int64 `json:"forbidden"`
}

// Server is the remote API.
type Server struct {
	db    *DB
	inbox http.Handler // the mux behind the inbox
	cfg   Config
	log   *slog.Logger
	mux   *http.ServeMux
	stats struct {
		created, duplicates, updated, stale, tooEarly, bad, unauthorized, forbidden atomic.Int64
	}

	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

// New returns the API over db, which must have been migrated.
func New(db *DB, cfg Config) (*Server, error) {
	if db == nil {
		return nil, &fitiq.FieldError{Field: "db", Problem: "must not be nil"}
	}
	if cfg.MaxBodyBytes < 0 {
		return nil, &fitiq.FieldError{Field: "Config.MaxBodyBytes", Problem: fmt.Sprintf("must not be negative, got %d", cfg.MaxBodyBytes)}
	}
	if cfg.TooEarlyRetryAfter < 0 {
		return nil, &fitiq.FieldError{Field: "Config.TooEarlyRetryAfter", Problem: fmt.Sprintf("must not be negative, got %s", cfg.TooEarlyRetryAfter)}
	}
	cfg.MaxBodyBytes = cmp.Or(cfg.MaxBodyBytes, 64<<10)
	cfg.TooEarlyRetryAfter = cmp.Or(cfg.TooEarlyRetryAfter, time.Second)
	if cfg.Clock == nil {
		cfg.Clock = outbox.SystemClock
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = otel.GetTextMapPropagator()
	}
	s := &Server{db: db, cfg: cfg, log: cfg.Logger.With("component", "fitiq.backend"), mux: http.NewServeMux(),
		tracer: cfg.TracerProvider.Tracer("github.com/fitiq/outbox/examples/fitiq/backend"), prop: cfg.Propagator}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "database": db.Dialect()})
	})
	s.mux.HandleFunc("POST /v1/users/{user}/{kind}", s.authorized(s.create))
	s.mux.HandleFunc("PUT /v1/users/{user}/{kind}/{id}", s.authorized(s.update))
	s.mux.HandleFunc("GET /v1/users/{user}/{kind}/{id}", s.authorized(s.get))
	s.mux.HandleFunc("GET /v1/users/{user}/{kind}", s.authorized(s.history))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	ib, err := inbox.New(context.Background(), db.db, db.inboxConfig())
	if err != nil {
		return nil, fmt.Errorf("fitiq/backend: %w", err)
	}
	// A replay runs the request again outside the inbox: the entity-level rules answer
	// it (409 with the record for a create, the stored record for an old update).
	mw, err := httpinbox.New(ib, httpinbox.Config{Replay: s.mux, Logger: s.log})
	if err != nil {
		return nil, err
	}
	s.inbox = mw.Wrap(s.mux)
	return s, nil
}

// inboxConfig is the backend's inbox. Event IDs never expire: a phone offline for
// months still syncs, and past the window the entity-level rules keep it correct.
func (d *DB) inboxConfig() inbox.Config {
	cfg := inbox.Config{Dialect: inbox.SQLite, Table: "fitiq_backend_inbox"}
	if d.postgres {
		cfg.Dialect = inbox.Postgres
	}
	cfg.MessageTime = func(string) (time.Time, bool) { return time.Time{}, false }
	return cfg
}

// DB returns the server's database.
func (s *Server) DB() *DB { return s.db }

// ServeHTTP implements http.Handler. Each request is a server span continuing the
// trace in its headers: an outbox delivery's, so that one trace runs from the user's
// save to here. Writes that carry an Idempotency-Key go through the inbox.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := s.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := s.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", r.Method), attribute.String("url.path", r.URL.Path)))
	defer span.End()
	sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	r = r.WithContext(ctx)
	// Writes that carry an Idempotency-Key go through the inbox.
	if (r.Method == http.MethodPost || r.Method == http.MethodPut) && r.Header.Get(httpinbox.DefaultHeader) != "" {
		s.inbox.ServeHTTP(sw, r)
	} else {
		s.mux.ServeHTTP(sw, r)
	}
	if r.Pattern != "" {
		span.SetName(r.Pattern) // "POST /v1/users/{user}/{kind}": the route, not the IDs
		span.SetAttributes(attribute.String("http.route", r.Pattern))
	}
	span.SetAttributes(attribute.Int("http.response.status_code", sw.status))
	if sw.status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(sw.status))
	}
}

// statusWriter remembers the status a handler answered, for the request's span.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.status = status
	w.ResponseWriter.WriteHeader(status)
}

// Stats returns the counters of what the server answered.
func (s *Server) Stats() Stats {
	return Stats{
		Created: s.stats.created.Load(), DuplicateCreates: s.stats.duplicates.Load(),
		Updated: s.stats.updated.Load(), StaleUpdates: s.stats.stale.Load(), TooEarly: s.stats.tooEarly.Load(),
		BadRequests: s.stats.bad.Load(), Unauthorized: s.stats.unauthorized.Load(), Forbidden: s.stats.forbidden.Load(),
	}
}

// call is one authenticated request under its user's path.
type call struct {
	w      http.ResponseWriter
	r      *http.Request
	userID string
	kind   fitiq.Kind
	req    Request
}

func (c *call) reply(status int, v any) {
	c.req.Status = status
	writeJSON(c.w, status, v)
}

func (s *Server) refuse(c *call, status int, msg string) {
	switch status {
	case http.StatusBadRequest:
		s.stats.bad.Add(1)
	}
	s.log.Info("request refused", "method", c.r.Method, "path", c.r.URL.Path, "status", status, "reason", msg)
	c.req.Status = status
	writeError(c.w, status, msg)
}

// authorized checks the bearer token against the path's user before calling h.
func (s *Server) authorized(h func(*call)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := &call{w: w, r: r, userID: r.PathValue("user")}
		c.req = Request{Method: r.Method, UserID: c.userID, ID: canonicalID(r.PathValue("id"))}
		defer func() {
			if s.cfg.Observer != nil && c.req.Status != 0 {
				s.cfg.Observer(c.req)
			}
		}()
		// The scheme is case-insensitive (RFC 9110 §11.1): "bearer x" is "Bearer x".
		scheme, token, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			s.stats.unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer realm="fitiq"`)
			s.refuse(c, http.StatusUnauthorized, "missing bearer token (Authorization: Bearer <token>)")
			return
		}
		owner, err := s.db.TokenUser(r.Context(), strings.TrimSpace(token))
		if errors.Is(err, ErrUnknownToken) {
			s.stats.unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer realm="fitiq", error="invalid_token"`)
			s.refuse(c, http.StatusUnauthorized, "unknown bearer token")
			return
		}
		if err != nil {
			s.fail(c, err)
			return
		}
		if owner != c.userID {
			s.stats.forbidden.Add(1)
			s.refuse(c, http.StatusForbidden, "this token cannot access another user's data")
			return
		}
		k, err := fitiq.ParseKind(r.PathValue("kind"))
		if err != nil {
			s.refuse(c, http.StatusNotFound, err.Error())
			return
		}
		c.kind, c.req.Kind = k, k
		h(c)
	}
}

// fail answers 500 for a failure of the server's own (its database); clients retry.
func (s *Server) fail(c *call, err error) {
	if c.r.Context().Err() != nil {
		return // the client went away; nobody reads the answer
	}
	s.log.Error("request failed", "method", c.r.Method, "path", c.r.URL.Path, "err", err)
	c.req.Status = http.StatusInternalServerError
	writeError(c.w, http.StatusInternalServerError, "internal error; try again")
}

// decode reads and validates the entity in the request body. On a problem it answers
// 400 (or 415) itself and returns nil.
func (s *Server) decode(c *call) fitiq.Entity {
	if ct := c.r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			s.refuse(c, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not application/json", ct))
			return nil
		}
	}
	body := http.MaxBytesReader(c.w, c.r.Body, s.cfg.MaxBodyBytes)
	e, _ := fitiq.NewEntity(c.kind)
	raw, err := io.ReadAll(body)
	if err == nil && !utf8.Valid(raw) {
		// encoding/json would quietly store U+FFFD in place of the bad bytes.
		s.refuse(c, http.StatusBadRequest, "request body is not valid UTF-8")
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err == nil {
		err = dec.Decode(e)
	}
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = errors.New("unexpected data after the JSON object")
		}
	}
	if err != nil {
		s.refuse(c, http.StatusBadRequest, bodyProblem(err, s.cfg.MaxBodyBytes))
		return nil
	}
	r := e.Base()
	c.req.ID, c.req.Version = cmp.Or(c.req.ID, r.ID), r.Version
	if err := e.Validate(s.cfg.Clock.Now()); err != nil {
		s.refuse(c, http.StatusBadRequest, err.Error())
		return nil
	}
	// One spelling per entity: the upper-case spelling of an ID is the same entity,
	// not a second one.
	r.ID = canonicalID(r.ID)
	return e
}

func bodyProblem(err error, limit int64) string {
	var (
		maxErr    *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		timeErr   *time.ParseError
	)
	switch {
	case errors.As(err, &maxErr):
		return fmt.Sprintf("request body is over the limit of %d bytes", limit)
	case errors.Is(err, io.EOF):
		return "request body is empty; want a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "malformed JSON: the body ends early"
	case errors.As(err, &syntaxErr):
		return fmt.Sprintf("malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.As(err, &typeErr):
		return fmt.Sprintf("%s: got a JSON %s, want %s", cmp.Or(typeErr.Field, "body"), typeErr.Value, typeErr.Type)
	case errors.As(err, &timeErr):
		return fmt.Sprintf("a date is not RFC 3339 (2025-01-31T08:00:00Z): %q", timeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	}
	return "malformed JSON: " + err.Error()
}

func (s *Server) record(e fitiq.Entity) (fitiq.RemoteRecord, error) {
	now := outbox.Timestamp(s.cfg.Clock.Now())
	typ, at := e.HistoryKey()
	if at.IsZero() {
		at = now // profiles have no date of their own: they are dated by their last change
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fitiq.RemoteRecord{}, err
	}
	r := e.Base()
	return fitiq.RemoteRecord{
		BackendID: uuid.NewString(), ID: r.ID, Kind: e.Kind(), Version: r.Version,
		Type: typ, Date: outbox.Timestamp(at), CreatedAt: now, UpdatedAt: now, Data: data,
	}, nil
}

// create stores a new entity: 201 with the record, or 409 with the stored record when
// the user has an entity of that kind and ID already (a replayed create).
func (s *Server) create(c *call) {
	e := s.decode(c)
	if e == nil {
		return
	}
	rec, err := s.record(e)
	if err != nil {
		s.fail(c, err)
		return
	}
	stored, created, err := s.db.Insert(c.r.Context(), c.userID, rec)
	if err != nil {
		s.fail(c, err)
		return
	}
	if !created {
		s.stats.duplicates.Add(1)
		c.reply(http.StatusConflict, stored)
		return
	}
	s.stats.created.Add(1)
	c.w.Header().Set("Location", fitiq.EntityPath(c.userID, c.kind, rec.ID))
	c.reply(http.StatusCreated, stored)
}

// update stores a new version of an entity: 200 with the record as stored.
//
// An update of an entity the backend has never seen is refused with 425 Too Early and
// a Retry-After, a status the client retries. The client's ordering key (the entity ID)
// means its create is delivered, and answered, before any update is sent; an update
// arriving first therefore means the create is still on its way (another device, a
// replay from a restored backup) or was given up. Retrying is right in the first case
// and harmless in the second: the update exhausts its attempts and is given up,
// visible beside the create that blocked it. A permanent 404 would instead drop an
// update that a moment later could have been applied. Applying it as an upsert is
// never done: the backend would hold an entity whose create it never validated, and
// an older create replayed afterwards would be answered 409 over newer data.
func (s *Server) update(c *call) {
	e := s.decode(c)
	if e == nil {
		return
	}
	if id := canonicalID(c.r.PathValue("id")); e.Base().ID != id {
		s.refuse(c, http.StatusBadRequest, fmt.Sprintf("id: the body's %q is not the path's %q", e.Base().ID, id))
		return
	}
	rec, err := s.record(e)
	if err != nil {
		s.fail(c, err)
		return
	}
	stored, applied, err := s.db.Update(c.r.Context(), c.userID, rec)
	switch {
	case errors.Is(err, fitiq.ErrNotFound):
		s.stats.tooEarly.Add(1)
		c.w.Header().Set("Retry-After", strconv.Itoa(int(max(s.cfg.TooEarlyRetryAfter.Round(time.Second), time.Second)/time.Second)))
		s.refuse(c, http.StatusTooEarly, fmt.Sprintf("update of %s %s before its create: the backend has not seen it yet", c.kind, rec.ID))
		return
	case err != nil:
		s.fail(c, err)
		return
	case !applied:
		s.stats.stale.Add(1) // a replay of this version or an older one: the stored one stays
	default:
		s.stats.updated.Add(1)
	}
	c.reply(http.StatusOK, stored)
}

func (s *Server) get(c *call) {
	rec, err := s.db.Get(c.r.Context(), c.userID, c.kind, canonicalID(c.r.PathValue("id")))
	if errors.Is(err, fitiq.ErrNotFound) {
		s.refuse(c, http.StatusNotFound, fmt.Sprintf("no %s with id %q", c.kind, c.r.PathValue("id")))
		return
	}
	if err != nil {
		s.fail(c, err)
		return
	}
	c.reply(http.StatusOK, rec)
}

func (s *Server) history(c *call) {
	q, err := fitiq.ParseHistoryQuery(c.r.URL.Query())
	if err != nil {
		s.refuse(c, http.StatusBadRequest, err.Error())
		return
	}
	page, err := s.db.History(c.r.Context(), c.userID, c.kind, q)
	if err != nil {
		s.fail(c, err)
		return
	}
	c.reply(http.StatusOK, page)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, fitiq.ErrorBody{Error: msg})
}

// Serve runs the API on ln until ctx ends, then shuts down gracefully: requests in
// flight are answered before it returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	return err
}

// canonicalID is the lower-case spelling of a UUID; anything else is left as it is
// (and then matches nothing, or is refused by validation).
func canonicalID(id string) string {
	if c, err := outbox.CanonicalID(id); err == nil {
		return c
	}
	return id
}

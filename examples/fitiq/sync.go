package fitiq

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/fitiq/outbox"
)

// SyncConfig wires the sync handlers.
type SyncConfig struct {
	// Local is where entities are read at delivery time and their backend IDs written. Required.
	Local *Local
	// Client sends them. Required.
	Client *Client
	// MaxAttempts is the processor's attempt budget, so that a handler failing an
	// event's last attempt marks the entity failed. Defaults to outbox.DefaultMaxAttempts.
	MaxAttempts int
	// Logger receives the sync's console lines: at Info, each event processed, what
	// was uploaded and the backend ID it got (the original design's "good sync" lines);
	// at Debug, the steps in between. Defaults to slog.Default().
	Logger *slog.Logger
}

// NewHandlers returns one sync handler per event type, for outbox.NewProcessor.
func NewHandlers(cfg SyncConfig) (outbox.Handlers, error) {
	if cfg.Local == nil {
		return nil, fieldErr("SyncConfig.Local", "must not be nil")
	}
	if cfg.Client == nil {
		return nil, fieldErr("SyncConfig.Client", "must not be nil")
	}
	if cfg.MaxAttempts < 0 {
		return nil, fieldErr("SyncConfig.MaxAttempts", "must not be negative, got %d", cfg.MaxAttempts)
	}
	cfg.MaxAttempts = cmp.Or(cfg.MaxAttempts, outbox.DefaultMaxAttempts)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	hs := outbox.Handlers{}
	for _, k := range Kinds {
		hs[k.EventType()] = &SyncHandler{kind: k, cfg: cfg, log: cfg.Logger.With("component", "fitiq.sync", "kind", string(k))}
	}
	return hs, nil
}

// SyncHandler delivers the events of one kind: it reads the entity from the local
// database at delivery time (so a retry sends the latest version), creates or updates
// it at the backend, and writes the backend ID back.
type SyncHandler struct {
	kind Kind
	cfg  SyncConfig
	log  *slog.Logger
}

// Handle implements outbox.Handler. It returns nil when the backend holds the entity
// (a 409 to a create included), an error marked outbox.Permanent when asking again
// cannot help (the entity is gone; a 4xx such as 400 or 403), and a plain error, with
// the server's Retry-After when it sent one, otherwise.
func (h *SyncHandler) Handle(ctx context.Context, ev outbox.Event) error {
	if ev.Type != h.kind.EventType() {
		return outbox.Permanent(fmt.Errorf("fitiq: %s handler got a %s event", h.kind, ev.Type))
	}
	log := h.log.With("event_id", ev.ID, "entity_id", ev.EntityID)
	log.Info("processing event", "type", ev.Type, "attempt", ev.Attempts)
	e, err := h.cfg.Local.Get(ctx, h.kind, ev.EntityID)
	if errors.Is(err, ErrNotFound) {
		// Deleted since it was saved, or never committed: there is nothing to send, and
		// there never will be. Retrying would only hide that.
		return outbox.Permanent(fmt.Errorf("fitiq: %s %s no longer exists locally: nothing to sync", h.kind, ev.EntityID))
	}
	if err != nil {
		return err // the local database is failing: worth another attempt
	}
	r := e.Base()
	if r.UserID != ev.UserID {
		return outbox.Permanent(fmt.Errorf("fitiq: %s %s belongs to user %q, the event to %q", h.kind, r.ID, r.UserID, ev.UserID))
	}

	ctx = WithIdempotencyKey(ctx, ev.ID)
	var rec RemoteRecord
	if ev.IsNewRecord {
		typ, _ := e.HistoryKey()
		log.Info("uploading "+h.kind.noun(), "type", typ, "version", r.Version)
		rec, err = h.cfg.Client.Create(ctx, ev.UserID, e)
		if errors.Is(err, ErrConflict) {
			// The backend has it already: an earlier attempt landed and its answer was
			// lost. That is success; ask which backend ID it got.
			log.Debug("already at the backend; looking up its ID")
			rec, err = h.cfg.Client.Get(ctx, ev.UserID, h.kind, r.ID)
		}
	} else {
		typ, _ := e.HistoryKey()
		log.Info("uploading "+h.kind.noun()+" update", "type", typ, "version", r.Version)
		rec, err = h.cfg.Client.Update(ctx, ev.UserID, e)
	}
	if err != nil {
		err = classify(err)
		// Unreachable is not a failure of the entry: the processor keeps it due and
		// spends no attempt, so it is never marked failed for it.
		if !outbox.IsUnavailable(err) && (outbox.IsPermanent(err) || ev.Attempts >= ev.EffectiveMaxAttempts(h.cfg.MaxAttempts)) {
			if ferr := h.cfg.Local.MarkFailed(context.WithoutCancel(ctx), h.kind, r.ID, r.Version); ferr != nil {
				log.Warn("could not mark entity failed", "err", ferr)
			}
		}
		return err
	}
	if rec.BackendID == "" {
		return fmt.Errorf("fitiq: backend answered for %s %s without a backend ID", h.kind, r.ID)
	}
	if err := h.cfg.Local.MarkSynced(ctx, h.kind, r.ID, rec.BackendID, r.Version); err != nil {
		// The backend has it; the next attempt gets a 409 and records the ID then.
		return fmt.Errorf("fitiq: record backend ID: %w", err)
	}
	log.Info(h.kind.noun()+" synced", "backend_id", rec.BackendID, "version", r.Version)
	return nil
}

// classify maps an API answer to the outbox's retry rules: 408, 425, 429 and 5xx (and
// anything that never got an answer) are retried, honouring Retry-After; other 4xx are
// permanent; an API that cannot be reached at all (offline) is unavailable.
func classify(err error) error {
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		if outbox.IsUnavailable(err) {
			return outbox.Unavailable(err) // offline: the processor pauses, no attempt spent
		}
		return err // timeout, reset, garbled answer: retry
	}
	if !apiErr.Retryable() {
		return outbox.Permanent(err)
	}
	if apiErr.RetryAfter > 0 {
		return outbox.RetryAfter(err, apiErr.RetryAfter)
	}
	return err
}

// noun names one entity of kind k in log lines.
func (k Kind) noun() string {
	switch k {
	case KindProgressEntry:
		return "progress entry"
	case KindPhysicalAttribute:
		return "physical attribute"
	case KindActivitySnapshot:
		return "activity snapshot"
	case KindProfileMetadata:
		return "profile"
	case KindProfilePhysical:
		return "physical profile"
	}
	return string(k)
}

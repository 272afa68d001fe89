package fitiq

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/fitiq/outbox"
)

// DirectSync is the sync path an app has before it adopts the outbox: it sends every
// local entity of userID whose latest version has not reached the backend, straight
// to the API, and records the backend ID it gets back. Nothing retries what fails: the
// entity stays pending for the next run. It returns how many entities it sent.
//
// It is here for the first phase of adopting the outbox, when the outbox runs in
// shadow beside this path (see NewShadowCompare) and is not yet relied on.
func DirectSync(ctx context.Context, local *Local, client *Client, userID string) (sent int, err error) {
	for _, k := range Kinds {
		entities, err := local.List(ctx, k, userID, 0)
		if err != nil {
			return sent, err
		}
		for _, e := range entities {
			r := e.Base()
			if r.SyncStatus != SyncPending {
				continue
			}
			var rec RemoteRecord
			if r.BackendID == "" {
				rec, err = client.Create(ctx, userID, e)
				if errors.Is(err, ErrConflict) {
					rec, err = client.Get(ctx, userID, k, r.ID)
				}
			} else {
				rec, err = client.Update(ctx, userID, e)
			}
			if err != nil {
				return sent, fmt.Errorf("fitiq: direct sync of %s %s: %w", k, r.ID, err)
			}
			if err := local.MarkSynced(ctx, k, r.ID, rec.BackendID, r.Version); err != nil {
				return sent, err
			}
			sent++
		}
	}
	return sent, nil
}

// NewShadowCompare returns the comparison of a shadow run (outbox.NewShadow): an event
// agrees when the backend holds its entity at the version the event announced, or a
// later one. A backend that cannot be asked is a difference too, named as such.
func NewShadowCompare(client *Client) func(ctx context.Context, ev outbox.Event) error {
	return func(ctx context.Context, ev outbox.Event) error {
		k, ok := kindOfEventType(ev.Type)
		if !ok {
			return fmt.Errorf("unknown event type %q", ev.Type)
		}
		rec, err := client.Get(ctx, ev.UserID, k, ev.EntityID)
		switch {
		case errors.Is(err, ErrNotFound):
			return fmt.Errorf("%s %s is not at the backend", k, ev.EntityID)
		case err != nil:
			return fmt.Errorf("ask the backend for %s %s: %w", k, ev.EntityID, err)
		}
		if want, err := strconv.ParseInt(ev.Metadata["entity_version"], 10, 64); err == nil && rec.Version < want {
			return fmt.Errorf("%s %s is at version %d at the backend, the event announced %d", k, ev.EntityID, rec.Version, want)
		}
		return nil
	}
}

func kindOfEventType(typ string) (Kind, bool) {
	for _, k := range Kinds {
		if k.EventType() == typ {
			return k, true
		}
	}
	return "", false
}

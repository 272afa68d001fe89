package outbox

import (
	"fmt"

	"github.com/google/uuid"
)

// CanonicalID returns the one spelling of an event ID every store keeps: a lower-case,
// hyphenated UUID. Other spellings of the same UUID (upper case, braces, a "urn:uuid:"
// prefix, no hyphens) are accepted and converted, so that an ID finds its event on
// every store alike; a string that is not a UUID is an error naming it.
func CanonicalID(id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return "", fieldError("ID", fmt.Sprintf("%q is not a UUID", id))
	}
	return u.String(), nil
}

// CanonicalIDs converts ids with CanonicalID, leaving out those that are not UUIDs:
// no event has such an ID, so a filter on them matches nothing. Stores call it on the
// IDs of filters, lease renewals, outcomes and deletes.
func CanonicalIDs(ids []string) []string {
	if ids == nil {
		return nil
	}
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if c, err := CanonicalID(id); err == nil {
			out = append(out, c)
		}
	}
	return out
}

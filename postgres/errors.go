package postgres

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/fitiq/outbox"
)

// SQLSTATE codes the store acts on. Errors are matched by code, never by message text.
const (
	codeUniqueViolation          = "23505"
	codeDeadlockDetected         = "40P01"
	codeSerializationFailure     = "40001"
	codeCharacterNotInRepertoire = "22021"
	codeUntranslatableCharacter  = "22P05"
)

func pgCode(err error) (code, constraint string) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code, pgErr.ConstraintName
	}
	return "", ""
}

// isClaimConflict reports an error after which a claim is simply run again: two
// claimers raced for one ordering key (the key_in_flight index refused the second),
// or the server broke a deadlock or a serialization conflict between them.
func (s *Store) isClaimConflict(err error) bool {
	code, constraint := pgCode(err)
	switch code {
	case codeUniqueViolation:
		return constraint == s.keyInFlightIndex
	case codeDeadlockDetected, codeSerializationFailure:
		return true
	}
	return false
}

// enqueueError turns a database refusal of an insert into the error a caller can act on.
func (s *Store) enqueueError(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return fmt.Errorf("outbox/postgres: insert events: %w", err)
	}
	switch {
	case pgErr.Code == codeUniqueViolation && pgErr.ConstraintName == s.idIndex:
		return fmt.Errorf("outbox/postgres: insert events: %w", &outbox.FieldError{Field: "ID", Problem: "is already used by another event (" + pgErr.Detail + ")"})
	case pgErr.Code == codeCharacterNotInRepertoire || pgErr.Code == codeUntranslatableCharacter:
		return fmt.Errorf("outbox/postgres: insert events: %w: %s", outbox.ErrInvalid, pgErr.Message)
	}
	return fmt.Errorf("outbox/postgres: insert events: %w", err)
}

package outbox_test

import (
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sqlite/sqlitetest"
)

// A wrapper such as BoundStore hides a store's optional interfaces from a type
// assertion; StoreAs finds them through Unwrap.
func TestStoreAsFindsOptionalInterfacesThroughAWrapper(t *testing.T) {
	s := sqlitetest.NewStore(t)
	bound := outbox.BoundStore(s, time.Second, nil)
	if _, ok := bound.(outbox.TypePauser); ok {
		t.Fatal("the wrapper itself pauses types: the test no longer shows what StoreAs is for")
	}
	if _, ok := outbox.StoreAs[outbox.TypePauser](bound); !ok {
		t.Error("StoreAs[TypePauser] does not find the SQLite store under BoundStore")
	}
	if _, ok := outbox.StoreAs[outbox.Timeline](bound); !ok {
		t.Error("StoreAs[Timeline] does not find the SQLite store under BoundStore")
	}
	type opaque struct{ outbox.Store } // a wrapper with no Unwrap
	if _, ok := outbox.StoreAs[outbox.TypePauser](opaque{bound}); ok {
		t.Error("StoreAs went through a wrapper that has no Unwrap")
	}
}

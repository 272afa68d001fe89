package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
)

// Phase one of adopting the outbox: events are written beside the existing delivery
// path, and a shadow processor compares each with what that path did, delivering
// nothing itself.
func ExampleShadow() {
	store, done := openExample()
	defer done()
	ctx := context.Background()
	if err := store.Enqueue(ctx, time.Now(),
		outbox.NewEvent("order.created", "o-1", "u"), outbox.NewEvent("order.created", "o-2", "u")); err != nil {
		log.Fatal(err)
	}
	delivered := map[string]bool{"o-1": true} // what the existing path sent; it lost o-2

	shadow := outbox.NewShadow(func(ctx context.Context, e outbox.Event) error {
		if !delivered[e.EntityID] {
			return errors.New("not delivered by the existing path")
		}
		return nil
	})
	p, err := outbox.NewProcessor(store, shadow, outbox.Config{Logger: outboxtest.Discard})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("compared %d events\n", shadow.Seen())
	for _, d := range shadow.Differences() {
		fmt.Printf("%s: %v\n", d.Event.EntityID, d.Err)
	}
	// Output:
	// compared 2 events
	// o-2: not delivered by the existing path
}

// Phase two: a processor that serves only the event types moved so far. The others
// wait, untouched, for the old path or a later processor.
func ExampleConfig_types() {
	store, done := openExample()
	defer done()
	ctx := context.Background()
	if err := store.Enqueue(ctx, time.Now(),
		outbox.NewEvent("order.created", "o-1", "u"), outbox.NewEvent("invoice.sent", "i-1", "u")); err != nil {
		log.Fatal(err)
	}
	send := outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
		fmt.Println("sent", e.Type, e.EntityID)
		return nil
	})
	p, err := outbox.NewProcessor(store, outbox.Handlers{"order.created": send},
		outbox.Config{Types: []string{"order.created"}, Logger: outboxtest.Discard})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		log.Fatal(err)
	}
	st, _ := p.Stats(ctx)
	fmt.Printf("invoice.sent still pending: %d\n", st.ByType["invoice.sent"].Pending)
	// Output:
	// sent order.created o-1
	// invoice.sent still pending: 1
}

package suspicion

import "testing"

func TestASuspectedFailureIsTheEventsOnlyAfterAnotherDeliverySucceeded(t *testing.T) {
	t.Parallel()
	var s Suspicion
	n1 := s.Start()
	if s.EventsFault("a") {
		t.Fatal("a's first suspected failure was called its own")
	}
	n2 := s.Start()
	if s.EventsFault("a") {
		t.Fatal("a failed again with no success in between (the destination may be down): called its own")
	}
	s.Succeeded(n1, "b") // b's delivery started before a's last failure
	s.Start()
	if s.EventsFault("a") {
		t.Fatal("a success that started before a's last failure made it a's own")
	}
	n4 := s.Start()
	s.Succeeded(n4, "c") // started after a's last failure: the destination takes events
	if !s.EventsFault("a") {
		t.Fatal("a failed again after another delivery succeeded: not called its own")
	}
	if s.EventsFault("a") {
		t.Fatal("the verdict was not reset: a's next suspected failure starts afresh")
	}
	s.Succeeded(n2, "a")
	if s.EventsFault("a") {
		t.Fatal("a succeeded, so its next suspected failure is a first one")
	}
}

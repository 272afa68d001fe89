package mysql

import (
	"context"
	"time"
)

// Subscribe implements outbox.Notifier: the channel receives a value after the
// store's own commits that enqueued events for userID (or for anyone, when userID is
// empty), and whenever the probe sees new events.
func (s *Store) Subscribe(userID string) (<-chan struct{}, func()) {
	return s.subs.Subscribe(userID)
}

// notify wakes the subscribers of the given users and those of all users; nil users
// wakes every subscriber.
func (s *Store) notify(users map[string]struct{}) { s.subs.Wake(users, users == nil) }

// probe wakes subscribers when the table's highest seq grows: a commit the store did
// not run itself. It reads one end of the primary key, and only while someone is
// subscribed. (An event whose seq is below one already seen when it commits is not
// noticed: the processors' poll finds it.)
func (s *Store) probe() {
	defer close(s.probeDone)
	ticker := time.NewTicker(s.cfg.ProbeInterval)
	defer ticker.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	query, _ := s.q.maxSeq.bind(nil)
	last := int64(-1)
	for {
		select {
		case <-s.stop:
			return
		case <-ticker.C:
		}
		if s.subs.Empty() {
			last = -1
			continue
		}
		var seq int64
		if err := s.db.QueryRowContext(ctx, query).Scan(&seq); err != nil {
			if ctx.Err() == nil {
				s.log.Debug("wake-up probe failed", "err", err)
			}
			continue
		}
		if last >= 0 && seq > last {
			s.notify(nil)
		}
		last = seq
	}
}

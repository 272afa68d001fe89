package cli

import (
	"context"
	"log/slog"
	"strings"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/pubsubsink"
	"github.com/fitiq/outbox/sink/sqssink"
)

// cloudSink checks an sqs://, sns:// or pubsub:// sink URL and returns how to build
// its sink; ok is false for any other scheme. Their URLs hold an ARN or a project,
// which url.Parse may refuse, so each sink's own parser decides. Credentials come from
// the cloud's usual chain (AWS's SDK, Google's Application Default Credentials), never
// from the URL.
func (o *relayOpts) cloudSink() (newSink func(*slog.Logger) (outbox.Handler, func(), error), ok bool, err error) {
	switch {
	case strings.HasPrefix(o.sink, "sqs://"), strings.HasPrefix(o.sink, "sns://"):
		cfg, err := sqssink.ParseURL(o.sink)
		if err != nil {
			return nil, true, usagef("--sink: %v", err)
		}
		cfg.Envelope, cfg.CloudEventsSource = o.envelope.format, o.envelope.source
		return func(*slog.Logger) (outbox.Handler, func(), error) {
			s, err := sqssink.Open(context.Background(), cfg)
			if err != nil {
				return nil, nil, err
			}
			return s, func() {}, nil
		}, true, nil
	case strings.HasPrefix(o.sink, "pubsub://"):
		cfg, err := pubsubsink.ParseURL(o.sink)
		if err != nil {
			return nil, true, usagef("--sink: %v", err)
		}
		cfg.Envelope, cfg.CloudEventsSource = o.envelope.format, o.envelope.source
		return func(*slog.Logger) (outbox.Handler, func(), error) {
			s, err := pubsubsink.Open(context.Background(), cfg)
			if err != nil {
				return nil, nil, err
			}
			return s, func() { _ = s.Close() }, nil
		}, true, nil
	}
	return nil, false, nil
}

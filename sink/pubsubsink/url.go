package pubsubsink

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/fitiq/outbox"
)

// ParseURL reads a sink URL, as `outbox relay --sink` takes it, into a Config:
//
//	pubsub://PROJECT/TOPIC[?endpoint=HOST:PORT]
//
// endpoint names a Pub/Sub API other than Google's (a regional endpoint, say); the
// emulator is found by PUBSUB_EMULATOR_HOST. Credentials are never in the URL: they
// are Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud's, the
// metadata server's).
func ParseURL(raw string) (Config, error) {
	bad := func(format string, args ...any) error {
		return &outbox.FieldError{Field: "pubsub URL", Problem: fmt.Sprintf(format, args...)}
	}
	var cfg Config
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "pubsub" {
		return cfg, bad("%q: want pubsub://PROJECT/TOPIC", raw)
	}
	topic := strings.Trim(u.Path, "/")
	if u.Host == "" || topic == "" || strings.Contains(topic, "/") || u.User != nil || u.Port() != "" {
		return cfg, bad("%q: want pubsub://PROJECT/TOPIC", raw)
	}
	for k := range u.Query() {
		if k != "endpoint" {
			return cfg, bad("%q: unknown parameter %q (want endpoint)", raw, k)
		}
	}
	cfg = Config{Project: u.Host, Topic: topic, Endpoint: u.Query().Get("endpoint")}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

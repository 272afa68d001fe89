package dashboard

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/fitiq/outbox"
)

// The dashboard's defaults.
const (
	DefaultPageSize        = 50
	DefaultMaxBatch        = 1000
	DefaultRefreshInterval = 5 * time.Second
	DefaultChartWindow     = time.Hour
)

// Config sets up a dashboard Handler.
type Config struct {
	// Store is the outbox to show and act on. Required.
	Store outbox.Store
	// Token, when set, is required on every request: as "Authorization: Bearer TOKEN",
	// or as the password of HTTP basic auth (the user name is then logged as who acted).
	// When empty, only clients on the loopback interface are served, and only under a
	// loopback name (Host localhost, 127.0.0.1 or [::1], any port; any other gets 421),
	// so that no other site can reach it by DNS rebinding: a dashboard reachable from
	// the network, or under another name, must have a token. Defaults to "".
	Token string
	// ReadOnly hides the actions and refuses them. Defaults to false.
	ReadOnly bool
	// Prefix is the path the handler is mounted under, as in
	// mux.Handle("/outbox/", http.StripPrefix("/outbox", h)) with Prefix "/outbox";
	// the pages' links start with it. Defaults to "" (mounted at the root).
	Prefix string
	// StaleAfter is how long an event may stay due before it counts as stale.
	// Defaults to outbox.DefaultStaleAfter.
	StaleAfter time.Duration
	// Health holds the alert rules the overview checks. Zero fields take the defaults
	// of outbox.HealthRules.
	Health outbox.HealthRules
	// PageSize is how many events a page of the list shows. Defaults to
	// DefaultPageSize.
	PageSize int
	// MaxBatch bounds how many events one action on a filtered set reaches; the
	// confirmation says when a set is larger. Defaults to DefaultMaxBatch.
	MaxBatch int
	// RefreshInterval is how often the overview refreshes itself, and how old the
	// figures it shows may be: they are computed for all viewers at once, at most once
	// per interval. Defaults to DefaultRefreshInterval.
	RefreshInterval time.Duration
	// ChartWindow is how far back the throughput chart reaches, in minutes. Defaults to
	// DefaultChartWindow.
	ChartWindow time.Duration
	// LogWaiting, when set, tells what waits on the event log of the log layout
	// (docs/log-layout.md), which the store's counts do not see: the committed events
	// the log relay's cursor has not passed, and when the oldest was created (zero when
	// none). The overview shows them beside the store's counts, and alerts (rule
	// "log_behind") when the oldest has waited longer than Health.MaxOldestDue. Pass a
	// relay's or a log's method: relay.Waiting, or func(ctx context.Context) (int64,
	// time.Time, error) { return log.Waiting(ctx, "relay") }. Defaults to nil: no log.
	LogWaiting func(ctx context.Context) (events int64, oldest time.Time, err error)
	// LogDelivered, when set, tells how many events the log layout's relays delivered
	// from since on, which the store's window of recent outcomes (Stats.Recent) does not
	// count: an event delivered from the log leaves no row; only the failures move to
	// the events table. The overview adds them to Recent.Completed, so that its
	// failure-rate rule is the share of the log's deliveries and the table's outcomes
	// together. Pass the log's method: log.Delivered (postgres.Log, sqlite.Log).
	// Defaults to nil: the store's outcomes only.
	LogDelivered func(ctx context.Context, since time.Time) (int64, error)
	// LogTimeline, when set, tells how many events the log layout's relays delivered in
	// each minute from since's minute up to until (buckets with Completed set; minutes
	// without deliveries may be left out), which the store's Timeline does not count,
	// for the same reason as LogDelivered. The overview adds them to its throughput
	// chart's completions and to the chart's window totals and failure rate. It asks
	// only for the minutes whose completions it has not kept (see docs/dashboard.md), and
	// only when the store has a Timeline (no chart otherwise). Pass the log's method:
	// log.DeliveredByMinute (postgres.Log, sqlite.Log). Defaults to nil: the store's
	// timeline only.
	LogTimeline func(ctx context.Context, since, until time.Time) ([]outbox.TimelineBucket, error)
	// Clock supplies "now". Defaults to outbox.SystemClock.
	Clock outbox.Clock
	// Logger receives a line for every event an action reaches (who, what, and the event
	// in full: ID, type, entity, user, status, attempts, ordering key, last error) and
	// one for the action (how many), and a warning for every request refused. Defaults
	// to slog.Default().
	Logger *slog.Logger
}

// Validate reports the first field of c that cannot work, naming it; zero fields are
// fine (they take their defaults) except Store.
func (c Config) Validate() error {
	if c.Store == nil {
		return &outbox.FieldError{Field: "dashboard.Config.Store", Problem: "must not be nil"}
	}
	ints := []struct {
		name  string
		value int
	}{{"dashboard.Config.PageSize", c.PageSize}, {"dashboard.Config.MaxBatch", c.MaxBatch}}
	for _, f := range ints {
		if f.value < 0 {
			return &outbox.FieldError{Field: f.name, Problem: fmt.Sprintf("must be positive, got %d", f.value)}
		}
	}
	durations := []struct {
		name  string
		value time.Duration
	}{
		{"dashboard.Config.StaleAfter", c.StaleAfter},
		{"dashboard.Config.RefreshInterval", c.RefreshInterval},
		{"dashboard.Config.ChartWindow", c.ChartWindow},
	}
	for _, f := range durations {
		if f.value < 0 {
			return &outbox.FieldError{Field: f.name, Problem: fmt.Sprintf("must be positive, got %s", f.value)}
		}
	}
	if c.ChartWindow != 0 && (c.ChartWindow < time.Minute || c.ChartWindow > 24*time.Hour) {
		return &outbox.FieldError{Field: "dashboard.Config.ChartWindow", Problem: fmt.Sprintf("must be from 1m to 24h, got %s", c.ChartWindow)}
	}
	if c.Prefix != "" && (!strings.HasPrefix(c.Prefix, "/") || strings.HasSuffix(c.Prefix, "/")) {
		return &outbox.FieldError{Field: "dashboard.Config.Prefix", Problem: fmt.Sprintf("must start with / and not end with one, got %q", c.Prefix)}
	}
	if err := c.Health.Validate(); err != nil {
		// HealthRules names its own fields: name them as fields of this one.
		var fe *outbox.FieldError
		if errors.As(err, &fe) {
			return &outbox.FieldError{Field: "dashboard.Config.Health." + fe.Field, Problem: fe.Problem}
		}
		return err
	}
	return nil
}

func (c Config) withDefaults() Config {
	c.StaleAfter = cmp.Or(c.StaleAfter, outbox.DefaultStaleAfter)
	c.PageSize = cmp.Or(c.PageSize, DefaultPageSize)
	c.MaxBatch = cmp.Or(c.MaxBatch, DefaultMaxBatch)
	c.RefreshInterval = cmp.Or(c.RefreshInterval, DefaultRefreshInterval)
	c.ChartWindow = cmp.Or(c.ChartWindow, DefaultChartWindow).Truncate(time.Minute)
	if c.Clock == nil {
		c.Clock = outbox.SystemClock
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// rules is c.Health with its zero fields shown as the values CheckHealth applies.
func (c Config) rules() outbox.HealthRules {
	r := c.Health
	r.MaxFailureRate = cmp.Or(r.MaxFailureRate, outbox.DefaultMaxFailureRate)
	r.MaxPending = cmp.Or(r.MaxPending, outbox.DefaultMaxPending)
	r.MaxOldestDue = cmp.Or(r.MaxOldestDue, outbox.DefaultMaxOldestDue)
	r.Window = cmp.Or(r.Window, outbox.DefaultHealthWindow)
	return r
}

package outbox

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// The processor's defaults. Config.withDefaults, the relay's flags and the configuration
// page of the docs all take their values from here (a test holds the docs to them).
const (
	DefaultBatchSize       = 10
	DefaultPollInterval    = 2 * time.Second
	DefaultMaxConcurrent   = 3
	DefaultBatchesInFlight = 1
	DefaultLeaseDuration   = 30 * time.Second
	DefaultHandlerTimeout  = 30 * time.Second
	DefaultCleanupInterval = time.Hour
	DefaultRetention       = 7 * 24 * time.Hour
	DefaultStaleAfter      = 5 * time.Minute
)

// Config tunes a Processor. Zero fields take the defaults above; a value that cannot
// work (a negative batch size, say) makes NewProcessor fail with an error naming it.
type Config struct {
	// UserID scopes the processor to one user's events, as an app on a phone does.
	// Empty serves all users, as a relay does.
	UserID string
	// Types scopes the processor to events of these types: the others stay pending,
	// untouched, for the processors that serve them, so that an application can move
	// its event types onto the outbox one at a time. Defaults to all types.
	Types []string
	// BatchSize is how many events one cycle claims. Defaults to DefaultBatchSize.
	BatchSize int
	// PollInterval is how long an idle processor waits before looking for due events
	// again. Triggers and store notifications cut it short, so it bounds latency only
	// when neither arrives. Defaults to DefaultPollInterval.
	PollInterval time.Duration
	// MaxConcurrent is how many deliveries of a batch run at once. Defaults to
	// DefaultMaxConcurrent.
	MaxConcurrent int
	// BatchesInFlight is how many batches a running processor works on at once: each
	// is claimed, delivered and recorded in turn by its own loop, and a loop that finds
	// a full batch wakes an idle one, so that under a backlog the next claim overlaps
	// the last batch's deliveries and outcomes (on a database store: its round trips).
	// Deliveries at once are then up to BatchesInFlight × MaxConcurrent. ProcessBatch
	// and Drain are not affected. Defaults to DefaultBatchesInFlight.
	BatchesInFlight int
	// Retry decides backoff and give-up. Defaults to DefaultRetryDelays, DefaultMaxAttempts
	// and DefaultJitter.
	Retry RetryPolicy
	// Breaker keeps a destination at fault (unreachable, rejecting the credentials, a
	// missing target) from spending the events' attempts: see BreakerConfig. Defaults
	// to DefaultBreakerThreshold, DefaultBreakerCooldown and DefaultBreakerMaxCooldown.
	Breaker BreakerConfig
	// LeaseDuration is how long a claim holds an event before another processor may
	// take it over. The processor renews its leases while it works, so this bounds how
	// long events of a crashed processor wait, not how long a delivery may take.
	// Defaults to DefaultLeaseDuration.
	LeaseDuration time.Duration
	// RoundTripTimeout bounds each call the processor makes to the store (a claim, a
	// lease renewal, recording outcomes, a cleanup batch, stats). A call that has not
	// answered by then is abandoned and tried again, on a database store over a fresh
	// connection, so that a connection gone silent (a hung server, a failover, a NAT
	// that dropped the flow) stalls delivery for one timeout, not for as long as the
	// silence lasts. It must fit well inside the lease. Defaults to a third of
	// LeaseDuration; negative means no deadline.
	RoundTripTimeout time.Duration
	// HandlerTimeout bounds one delivery; a delivery that overruns fails and is retried.
	// Defaults to DefaultHandlerTimeout; negative means no timeout.
	HandlerTimeout time.Duration
	// CleanupInterval is how often completed events older than Retention are deleted.
	// Defaults to DefaultCleanupInterval; negative disables cleanup.
	CleanupInterval time.Duration
	// Retention is how long completed events are kept. Defaults to DefaultRetention.
	Retention time.Duration
	// StaleAfter is how long an event may stay due before it counts as stale. Defaults
	// to DefaultStaleAfter.
	StaleAfter time.Duration
	// Health holds the alert thresholds Health applies. Each zero field takes its
	// Default… constant (DefaultMaxPending, …).
	Health HealthRules
	// SkipGivenUp lets events proceed past a given-up earlier event of their ordering
	// key. By default they wait, reported as blocked, until an operator retries or
	// deletes the given-up one. Defaults to false.
	SkipGivenUp bool
	// Owner names this processor in leases. Defaults to host-pid-random.
	Owner string
	// Clock supplies the time. Defaults to SystemClock.
	Clock Clock
	// Logger receives the processor's log lines. Defaults to slog.Default().
	Logger *slog.Logger
	// Observers are told about every claim and delivery (metrics, tracing, a tally of
	// one's own). Each is told everything, including the optional interfaces it
	// implements (BreakerObserver, SettleObserver, LeaseObserver): the processor does
	// the fan-out, so no observer needs to forward calls to another.
	Observers []Observer
}

// Observer is told what a processor does, for metrics. Its methods are called from
// the processor's goroutines and must not block.
type Observer interface {
	// ObserveClaim reports a claim that returned n events and took d.
	ObserveClaim(n int, d time.Duration)
	// ObserveDelivery reports one delivery attempt of e, its outcome, and how long the
	// handler took.
	ObserveDelivery(e Event, o Outcome, d time.Duration)
}

// BreakerObserver is an Observer that is also told about destination faults: an
// Observer that implements it gets these calls too.
type BreakerObserver interface {
	// ObserveUnavailable reports a delivery of e that failed as the destination's fault
	// (err; see DestinationError): the attempt is not counted, and ObserveDelivery sees
	// it as Released.
	ObserveUnavailable(e Event, err error)
	// ObserveHold reports that delivery to a target ("" for the whole destination) is
	// now held (held true) for reason, or resumed (held false, with the reason it was
	// held for).
	ObserveHold(target, reason string, held bool)
}

func (c Config) withDefaults() Config {
	c.BatchSize = cmp.Or(c.BatchSize, DefaultBatchSize)
	c.PollInterval = cmp.Or(c.PollInterval, DefaultPollInterval)
	c.MaxConcurrent = cmp.Or(c.MaxConcurrent, DefaultMaxConcurrent)
	c.BatchesInFlight = cmp.Or(c.BatchesInFlight, DefaultBatchesInFlight)
	c.Retry = c.Retry.withDefaults()
	c.Breaker = c.Breaker.withDefaults()
	c.LeaseDuration = cmp.Or(c.LeaseDuration, DefaultLeaseDuration)
	c.RoundTripTimeout = cmp.Or(c.RoundTripTimeout, c.LeaseDuration/3)
	c.HandlerTimeout = cmp.Or(c.HandlerTimeout, DefaultHandlerTimeout)
	c.CleanupInterval = cmp.Or(c.CleanupInterval, DefaultCleanupInterval)
	c.Retention = cmp.Or(c.Retention, DefaultRetention)
	c.StaleAfter = cmp.Or(c.StaleAfter, DefaultStaleAfter)
	c.Health = c.Health.withDefaults()
	if c.Owner == "" {
		c.Owner = defaultOwner()
	}
	if c.Clock == nil {
		c.Clock = SystemClock
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate reports the first field of c that cannot work, naming it; zero fields are
// fine (they take their defaults). NewProcessor calls it, so callers need to only when
// they check a configuration before building anything, as the relay does.
func (c Config) Validate() error {
	positive := []struct {
		name  string
		value time.Duration
	}{
		{"Config.PollInterval", c.PollInterval},
		{"Config.LeaseDuration", c.LeaseDuration},
		{"Config.Retention", c.Retention},
		{"Config.StaleAfter", c.StaleAfter},
	}
	for _, f := range positive {
		if f.value < 0 {
			return fieldError(f.name, fmt.Sprintf("must be positive, got %s", f.value))
		}
	}
	for i, t := range c.Types {
		if err := ValidateType(fmt.Sprintf("Config.Types[%d]", i), t); err != nil {
			return err
		}
	}
	if c.LeaseDuration > 0 && c.LeaseDuration < MinLeaseDuration {
		// The lease is renewed every third of it: shorter than this, renewals and store
		// calls cannot keep up (and a lease under 3ns would not even make a ticker).
		return fieldError("Config.LeaseDuration", fmt.Sprintf("must be at least %s, got %s", MinLeaseDuration, c.LeaseDuration))
	}
	lease := cmp.Or(c.LeaseDuration, DefaultLeaseDuration)
	if c.RoundTripTimeout >= lease {
		return fieldError("Config.RoundTripTimeout", fmt.Sprintf("must be shorter than the lease (%s), got %s", lease, c.RoundTripTimeout))
	}
	if c.BatchSize < 0 {
		return fieldError("Config.BatchSize", fmt.Sprintf("must be positive, got %d", c.BatchSize))
	}
	if c.MaxConcurrent < 0 {
		return fieldError("Config.MaxConcurrent", fmt.Sprintf("must be positive, got %d", c.MaxConcurrent))
	}
	if c.BatchesInFlight < 0 {
		return fieldError("Config.BatchesInFlight", fmt.Sprintf("must be positive, got %d", c.BatchesInFlight))
	}
	if err := c.Retry.Validate(); err != nil {
		return within("Config.Retry", err)
	}
	if err := c.Breaker.Validate(); err != nil {
		return within("Config.Breaker", err)
	}
	return within("Config.Health", c.Health.Validate())
}

func defaultOwner() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", cmp.Or(host, "host"), os.Getpid(), hex.EncodeToString(b[:]))
}

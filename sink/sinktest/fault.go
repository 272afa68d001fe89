package sinktest

// Fault is one row of the conformance matrix: something that goes wrong between a
// sink and its destination. The value names the row's subtest and its line in the
// results files.
type Fault string

// The rows, in the order Run runs them and the table lists them. Each comment says
// what the harness arranges for it; see Setup for how.
const (
	// FaultRefused: the destination refuses connections (it is down, nothing listens).
	// With a Proxy: ModeRefuse, fixed by ModePass.
	FaultRefused Fault = "refused"
	// FaultBlackholed: the destination accepts TCP connections and never answers (a
	// firewall dropping packets, a hung server). With a Proxy: ModeBlackhole.
	FaultBlackholed Fault = "blackholed"
	// FaultRestarted: the destination restarts while a batch is being delivered: every
	// connection drops, and it takes new ones at once. Setup.Inject is required and is
	// called mid-batch; with a Proxy it sets ModeRestart.
	FaultRestarted Fault = "restarted"
	// FaultCredentials: the destination rejects the sink's credentials (a wrong or
	// rotated password, token or key).
	FaultCredentials Fault = "credentials"
	// FaultTargetMissing: what the sink publishes to does not exist (an HTTP path that
	// answers 404, a topic, stream, exchange or queue never created).
	FaultTargetMissing Fault = "target-missing"
	// FaultTargetRecreated: the target exists and takes an event, is then deleted, and
	// is created again by Fix. Setup.Inject (the deletion) is required.
	FaultTargetRecreated Fault = "target-recreated"
	// FaultTooLarge: one event of the batch is larger than the destination takes. The
	// suite makes it so from Setup.MaxMessageBytes; Case.Odd is its ID.
	FaultTooLarge Fault = "too-large"
	// FaultOneRejected: the destination rejects one event of the batch, Case.Odd, and
	// takes the others.
	FaultOneRejected Fault = "one-rejected"
	// FaultSlowAck: the destination keeps each event but acknowledges it only after
	// the handler timeout has passed.
	FaultSlowAck Fault = "slow-ack"
	// FaultCutAfterRequest: the connection is cut once the request has gone out, so
	// the destination may hold the event while the sink never hears back. With a
	// Proxy: ModeCut.
	FaultCutAfterRequest Fault = "cut-after-request"
	// FaultHostileAnswers: the destination's answers are malformed or hostile: bodies
	// with NUL bytes, invalid UTF-8, megabytes of text, garbage where a protocol
	// answer belongs.
	FaultHostileAnswers Fault = "hostile-answers"
)

var faults = []Fault{
	FaultRefused, FaultBlackholed, FaultRestarted, FaultCredentials, FaultTargetMissing,
	FaultTargetRecreated, FaultTooLarge, FaultOneRejected, FaultSlowAck,
	FaultCutAfterRequest, FaultHostileAnswers,
}

var descriptions = map[Fault]string{
	FaultRefused:         "destination refuses connections",
	FaultBlackholed:      "blackholed (TCP accepted, no answer)",
	FaultRestarted:       "destination restarted mid-batch",
	FaultCredentials:     "credentials rejected",
	FaultTargetMissing:   "target missing (path, topic, stream, exchange, queue)",
	FaultTargetRecreated: "target deleted, then recreated",
	FaultTooLarge:        "one message too large",
	FaultOneRejected:     "one message of a batch rejected",
	FaultSlowAck:         "acknowledgement slower than the handler timeout",
	FaultCutAfterRequest: "connection cut after the request was sent",
	FaultHostileAnswers:  "malformed or hostile answers (NUL, invalid UTF-8, huge)",
}

// Faults returns every row of the matrix, in order.
func Faults() []Fault { return append([]Fault(nil), faults...) }

// Description says what goes wrong in the row, for people: the table's first column.
func (f Fault) Description() string {
	if d, ok := descriptions[f]; ok {
		return d
	}
	return string(f)
}

// odd reports whether the row is about one event of the batch (Case.Odd), the others
// being expected to go through.
func (f Fault) odd() bool { return f == FaultTooLarge || f == FaultOneRejected }

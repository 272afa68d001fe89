package sinktest

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

// memDest is an in-memory destination and its sink in one: Handle consults the
// arranged fault, which says whether the event is kept and what the sink returns.
type memDest struct {
	dedup bool

	mu    sync.Mutex
	held  []string
	kept  map[string]bool
	fault func(ctx context.Context, e outbox.Event) (keep bool, err error)
	// gate, when set, holds a batch after its first event until it is closed, so that
	// a mid-batch Inject lands mid-batch however fast the fake is.
	gate chan struct{}
}

func (d *memDest) set(f func(ctx context.Context, e outbox.Event) (bool, error)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fault = f
}

func (d *memDest) Handle(ctx context.Context, e outbox.Event) error {
	d.mu.Lock()
	f := d.fault
	d.mu.Unlock()
	keep, err := true, error(nil)
	if f != nil {
		keep, err = f(ctx, e)
	}
	if keep {
		d.mu.Lock()
		if !d.dedup || !d.kept[e.ID] {
			d.held = append(d.held, e.ID)
		}
		if d.kept == nil {
			d.kept = map[string]bool{}
		}
		d.kept[e.ID] = true
		d.mu.Unlock()
	}
	return err
}

func (d *memDest) Held(context.Context) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.held...), nil
}

// memBatch is the same destination behind a BatchHandler.
type memBatch struct{ *memDest }

func (b memBatch) HandleBatch(ctx context.Context, events []outbox.Event) []error {
	errs := make([]error, len(events))
	for i, e := range events {
		if i == 1 && b.gate != nil {
			select {
			case <-b.gate:
			case <-ctx.Done():
			}
		}
		errs[i] = b.Handle(ctx, e)
	}
	return errs
}

func fails(err error) func(context.Context, outbox.Event) (bool, error) {
	return func(context.Context, outbox.Event) (bool, error) { return false, err }
}

// memHarness sets up every row on a fresh memDest, behaving as a well-made sink
// would. hostile is n/a: an in-memory destination gives no answers to mangle.
func memHarness(batch, dedup bool) Harness {
	return Harness{Name: "mem", Dedup: dedup, Setup: func(t *testing.T, c Case) Setup {
		d := &memDest{dedup: dedup}
		var sink outbox.Handler = d
		if batch {
			sink = memBatch{d}
		}
		s := Setup{Sink: sink, Held: d.Held}
		fix := func(context.Context) error { d.set(nil); return nil }
		switch c.Fault {
		case FaultRefused:
			d.set(fails(outbox.Unavailable(errors.New("dial tcp 127.0.0.1:1: connect: connection refused"))))
			s.Fix = fix
		case FaultBlackholed:
			d.set(func(ctx context.Context, _ outbox.Event) (bool, error) { <-ctx.Done(); return false, ctx.Err() })
			s.Fix = fix
		case FaultRestarted:
			if batch {
				d.gate = make(chan struct{})
			}
			s.Inject = func(context.Context) error {
				var dropped atomic.Bool // the restart drops the next delivery, then all is well
				d.set(func(context.Context, outbox.Event) (bool, error) {
					if dropped.CompareAndSwap(false, true) {
						return false, errors.New("read: connection reset by peer")
					}
					return true, nil
				})
				if d.gate != nil {
					close(d.gate)
				}
				return nil
			}
		case FaultCredentials:
			d.set(fails(outbox.DestinationFault(outbox.ReasonCredentials, errors.New("authorization violation"))))
			s.Fix = fix
		case FaultTargetMissing:
			d.set(fails(outbox.TargetFault(outbox.ReasonTargetMissing, "topic-a", errors.New("unknown topic"))))
			s.Fix = fix
		case FaultTargetRecreated:
			s.Inject = func(context.Context) error {
				d.set(fails(outbox.TargetFault(outbox.ReasonTargetMissing, "topic-a", errors.New("unknown topic"))))
				return nil
			}
			s.Fix = fix
		case FaultTooLarge:
			s.MaxMessageBytes = 1000
			d.set(func(_ context.Context, e outbox.Event) (bool, error) {
				if len(e.Payload) > 1000 {
					return false, outbox.Permanent(errors.New("message too large"))
				}
				return true, nil
			})
		case FaultOneRejected:
			d.set(func(_ context.Context, e outbox.Event) (bool, error) {
				if e.ID == c.Odd {
					return false, outbox.Permanent(errors.New("422 unprocessable"))
				}
				return true, nil
			})
		case FaultSlowAck:
			d.set(func(ctx context.Context, _ outbox.Event) (bool, error) { <-ctx.Done(); return true, ctx.Err() })
			s.Fix = fix
		case FaultCutAfterRequest:
			d.set(func(context.Context, outbox.Event) (bool, error) { return true, io.ErrUnexpectedEOF })
			s.Fix = fix
		case FaultHostileAnswers:
			return Setup{NotApplicable: "an in-memory destination gives no answers"}
		}
		return s
	}}
}

var memWant = map[Fault]Verdict{
	FaultRefused:         {Class: Held, Reason: outbox.ReasonUnreachable},
	FaultBlackholed:      {Class: Retry},
	FaultRestarted:       {Class: Retry},
	FaultCredentials:     {Class: Held, Reason: outbox.ReasonCredentials},
	FaultTargetMissing:   {Class: Held, Reason: outbox.ReasonTargetMissing, Target: "topic-a"},
	FaultTargetRecreated: {Class: Held, Reason: outbox.ReasonTargetMissing, Target: "topic-a"},
	FaultTooLarge:        {Class: GivenUp},
	FaultOneRejected:     {Class: GivenUp},
	FaultSlowAck:         {Class: Retry},
	FaultCutAfterRequest: {Class: Retry},
}

// testOptions keeps the suite's own tests quick: the fake answers at once.
var testOptions = options{timeout: 50 * time.Millisecond, batch: 4, settle: 300 * time.Millisecond, grace: 50 * time.Millisecond}

func report(got *Result) Option { return func(o *options) { o.report = func(r Result) { *got = r } } }

func TestRunPassesAWellMadeSink(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		batch, dedup   bool
		slowDuplicates int
	}{
		{"Handle", false, true, 0},
		{"HandleBatch", true, true, 0},
		{"HandleWithoutDedup", false, false, 4}, // each slow-acked event kept, then kept again
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got Result
			t.Run("Conformance", func(t *testing.T) {
				Run(t, memHarness(tc.batch, tc.dedup), memWant, Parallel(), HandlerTimeout(50*time.Millisecond), report(&got))
			})
			if len(got.Rows) != len(faults) {
				t.Fatalf("%d rows reported, want %d", len(got.Rows), len(faults))
			}
			for i, row := range got.Rows {
				if row.Fault != faults[i] {
					t.Errorf("row %d is %s, want %s (rows in the order of Faults)", i, row.Fault, faults[i])
				}
				if row.Fault == FaultHostileAnswers && row.Cell() != "n/a: an in-memory destination gives no answers" {
					t.Errorf("hostile row = %q, want it reported n/a with the reason", row.Cell())
				}
				if row.Fault == FaultSlowAck && row.Duplicates != tc.slowDuplicates {
					t.Errorf("slow-ack duplicates = %d, want %d", row.Duplicates, tc.slowDuplicates)
				}
			}
		})
	}
}

// TestRunFindsFaultySinks runs single rows against sinks that break one rule each,
// and checks the suite names the break.
func TestRunFindsFaultySinks(t *testing.T) {
	t.Parallel()
	// with changes, in one row, how the well-made fake behaves.
	with := func(change func(d *memDest, s *Setup)) Harness {
		h := memHarness(false, true)
		inner := h.Setup
		h.Setup = func(t *testing.T, c Case) Setup {
			s := inner(t, c)
			change(s.Sink.(*memDest), &s)
			return s
		}
		return h
	}
	tests := []struct {
		name    string
		fault   Fault
		harness Harness
		want    map[Fault]Verdict
		problem string
	}{
		{"delivered without the destination holding it", FaultCredentials,
			with(func(d *memDest, _ *Setup) { d.set(fails(nil)) }), memWant,
			"reported delivered are not at the destination"},
		{"duplicates where the destination deduplicates", FaultCutAfterRequest,
			with(func(d *memDest, _ *Setup) { d.dedup = false }), memWant,
			"extra copies"},
		{"classified otherwise than expected", FaultCredentials,
			with(func(d *memDest, _ *Setup) {
				d.set(fails(outbox.Permanent(errors.New("401 Unauthorized"))))
			}), memWant,
			`classified "given up", want "held: credentials rejected"`},
		{"no expectation for the row", FaultRefused, memHarness(false, true), map[Fault]Verdict{},
			`no expectation for refused; the sink's verdict was "held: destination unreachable"`},
		{"NUL in an error", FaultCutAfterRequest,
			with(func(d *memDest, _ *Setup) { d.set(fails(errors.New("bad\x00body"))) }), memWant,
			"holds a NUL byte"},
		{"invalid UTF-8 in an error", FaultCutAfterRequest,
			with(func(d *memDest, _ *Setup) { d.set(fails(errors.New("bad \xff\xfe body"))) }), memWant,
			"not valid UTF-8"},
		{"a huge error", FaultCutAfterRequest,
			with(func(d *memDest, _ *Setup) { d.set(fails(errors.New(strings.Repeat("x", 5000)))) }), memWant,
			"over outbox.MaxErrorLength"},
		{"never recovers after Fix", FaultRefused,
			with(func(_ *memDest, s *Setup) { s.Fix = nil }), memWant,
			"4 of 4 events were still not delivered"},
		{"gives up once the fault is cleared", FaultCutAfterRequest,
			with(func(d *memDest, s *Setup) {
				s.Fix = func(context.Context) error { d.set(fails(outbox.Permanent(errors.New("nope")))); return nil }
			}), memWant,
			"given up when delivered with no fault"},
		{"one bad message fails the others", FaultOneRejected,
			with(func(d *memDest, _ *Setup) { d.set(fails(outbox.Permanent(errors.New("422")))) }), memWant,
			"one bad message must not fail the others"},
		{"one fault classified two ways", FaultCredentials,
			with(func(d *memDest, _ *Setup) {
				var n atomic.Int32
				d.set(func(context.Context, outbox.Event) (bool, error) {
					if n.Add(1) == 2 {
						return false, errors.New("timeout")
					}
					return false, outbox.DestinationFault(outbox.ReasonCredentials, errors.New("401"))
				})
			}), memWant,
			"classified differently"},
		{"no Inject where the row needs one", FaultTargetRecreated,
			with(func(_ *memDest, s *Setup) { s.Inject = nil }), memWant,
			"Setup.Inject is required for target-recreated"},
		{"a sink that ignores its context", FaultBlackholed,
			with(func(d *memDest, _ *Setup) {
				d.set(func(context.Context, outbox.Event) (bool, error) {
					time.Sleep(200 * time.Millisecond)
					return false, nil
				})
			}), memWant,
			"had not returned 50ms after its context ended"},
		{"a panicking sink", FaultRefused,
			with(func(d *memDest, _ *Setup) {
				d.set(func(context.Context, outbox.Event) (bool, error) { panic("boom") })
			}), memWant,
			"the sink panicked: boom"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			row := runRow(t, tc.harness, tc.fault, tc.want, testOptions)
			if !strings.Contains(strings.Join(row.Problems, "\n"), tc.problem) {
				t.Fatalf("problems = %q, want one saying %q", row.Problems, tc.problem)
			}
		})
	}
}

func TestRunFindsABatchOfTheWrongLength(t *testing.T) {
	t.Parallel()
	h := Harness{Name: "short", Setup: func(*testing.T, Case) Setup {
		return Setup{Sink: shortBatch{}, Held: func(context.Context) ([]string, error) { return nil, nil }}
	}}
	row := runRow(t, h, FaultRefused, memWant, testOptions)
	if !strings.Contains(strings.Join(row.Problems, "\n"), "HandleBatch returned 0 results for 4 events") {
		t.Fatalf("problems = %q", row.Problems)
	}
}

type shortBatch struct{}

func (shortBatch) Handle(context.Context, outbox.Event) error { return nil }
func (shortBatch) HandleBatch(context.Context, []outbox.Event) []error {
	return nil
}

func TestRunTellsTheHarnessTheOddEvent(t *testing.T) {
	t.Parallel()
	var got Case
	h := memHarness(false, true)
	inner := h.Setup
	h.Setup = func(t *testing.T, c Case) Setup { got = c; return inner(t, c) }
	if row := runRow(t, h, FaultOneRejected, memWant, testOptions); !row.Passed() {
		t.Fatalf("problems: %q", row.Problems)
	}
	if got.Fault != FaultOneRejected || got.Odd == "" {
		t.Fatalf("Case = %+v, want the fault and the odd event's ID", got)
	}
	if row := runRow(t, h, FaultRefused, memWant, testOptions); !row.Passed() || got.Odd != "" {
		t.Fatalf("refused: Case = %+v (want no odd event), problems %q", got, row.Problems)
	}
}

func TestPaddingIsExactJSON(t *testing.T) {
	for _, n := range []int{10, 11, 1001} {
		if p := padding(n); len(p) != n || !strings.HasPrefix(string(p), `{"pad":"`) {
			t.Errorf("padding(%d) = %d bytes %.20q", n, len(p), p)
		}
	}
}

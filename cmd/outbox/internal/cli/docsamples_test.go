package cli

// The sample outputs in docs/ are what the commands print: each block that starts
// with "$ outbox …" is run, command by command, against the page's scenario (a store
// in a known state, at a known time), and must read exactly as the page shows it.
// After a change of format, `go test -run TestDocSamples -update-docs` rewrites the
// blocks, to be read and committed.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sqlite"
)

var updateDocs = flag.Bool("update-docs", false, "rewrite the sample outputs in docs/ with what the commands print")

// docsDir is docs/ from this package's directory.
var docsDir = filepath.Join("..", "..", "..", "..", "docs")

// docScenarios builds, for each page with samples, the store its samples are printed
// from, and returns the Env the commands run in (OUTBOX_DSN names the store).
var docScenarios = map[string]func(t *testing.T) Env{
	"operating.md": failingReceiverScenario,
	"adopting.md":  pausedTypesScenario,
	"relay.md":     logBehindScenario,
}

// sampleBlock is a fenced block of a page whose first line is "$ outbox …".
type sampleBlock struct {
	start, end int // the lines of its body, [start, end)
	body       string
}

func sampleBlocks(page string) []sampleBlock {
	lines := strings.Split(page, "\n")
	var blocks []sampleBlock
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "```") {
			continue
		}
		j := i + 1
		for j < len(lines) && !strings.HasPrefix(lines[j], "```") {
			j++
		}
		if j < len(lines) && i+1 < j && strings.HasPrefix(lines[i+1], "$ outbox ") {
			blocks = append(blocks, sampleBlock{start: i + 1, end: j, body: strings.Join(lines[i+1:j], "\n") + "\n"})
		}
		i = j
	}
	return blocks
}

// runSample runs the "$ " lines of a sample and returns the block as they print it:
// each command line followed by its output (stdout, then stderr).
func runSample(t *testing.T, env Env, body string) string {
	t.Helper()
	var out strings.Builder
	code := 0
	for line := range strings.Lines(body) {
		cmd, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "$ ")
		if !ok {
			continue
		}
		out.WriteString("$ " + cmd + "\n")
		switch args := shellWords(t, cmd); {
		case cmd == "echo $?":
			fmt.Fprintln(&out, code)
		case args[0] == "outbox":
			r := runEnv(t, env, args[1:]...)
			out.WriteString(r.stdout + r.stderr)
			code = r.code
		default:
			t.Fatalf("a sample runs %q: only outbox commands and 'echo $?' can be run here", cmd)
		}
	}
	return out.String()
}

// shellWords splits a command line as a shell would, for the simple quoting samples use.
func shellWords(t *testing.T, s string) []string {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
	}
	return strings.Join(lines, "\n")
}

func TestDocSamplesAreWhatTheCommandsPrint(t *testing.T) {
	t.Parallel()
	pages, err := filepath.Glob(filepath.Join(docsDir, "*.md"))
	if err != nil || len(pages) == 0 {
		t.Fatalf("no page in %s: %v", docsDir, err)
	}
	found := 0
	for _, path := range pages {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blocks := sampleBlocks(string(b))
		if len(blocks) == 0 {
			continue
		}
		name := filepath.Base(path)
		scenario, ok := docScenarios[name]
		if !ok {
			t.Errorf("docs/%s shows the output of outbox commands, but no scenario prints it: add one to docScenarios", name)
			continue
		}
		found += len(blocks)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := scenario(t)
			lines := strings.Split(string(b), "\n")
			changed := false
			// From the last block up, so that a rewrite keeps the earlier blocks' line numbers.
			for i := len(blocks) - 1; i >= 0; i-- {
				blk := blocks[i]
				got := trimLines(runSample(t, env, blk.body))
				if got == trimLines(blk.body) {
					continue
				}
				if *updateDocs {
					lines = append(lines[:blk.start], append(strings.Split(strings.TrimSuffix(got, "\n"), "\n"), lines[blk.end:]...)...)
					changed = true
					continue
				}
				t.Errorf("docs/%s:%d: the sample is not what the commands print (go test -run TestDocSamples -update-docs rewrites it).\nThe page:\n%s\nThe commands:\n%s",
					name, blk.start+1, blk.body, got)
			}
			if changed {
				if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("rewrote the samples of docs/%s", name)
			}
		})
	}
	if found == 0 {
		t.Fatal("no sample output found in docs/: the test finds nothing to check")
	}
}

// sampleEnv is the Env of a scenario: its clock, and OUTBOX_DSN naming its store.
func sampleEnv(clock outbox.Clock, dsn string) Env {
	return Env{Clock: clock, Getenv: func(k string) string {
		if k == "OUTBOX_DSN" {
			return dsn
		}
		return ""
	}}
}

// sampleID is a fixed event ID, so that the samples show the same IDs every run.
func sampleID(n int) string { return fmt.Sprintf("01a231e3-7033-7306-bde6-%012x", 0xece65bea5a00+n) }

// failingReceiverScenario: a SQLite outbox whose receiver has been failing for a
// minute. 61 orders were written; 8 were delivered, 52 fail with 503 and wait for
// their fourth attempt, and one was refused for good (400).
func failingReceiverScenario(t *testing.T) Env {
	b := sqliteBackend(t)
	store := migrated(t, b)
	start := time.Date(2026, 12, 1, 13, 44, 18, 0, time.UTC)
	clock := outboxtest.NewClock(start)
	ctx := context.Background()
	var events []*outbox.Event
	for i := 1; i <= 60; i++ {
		e := outbox.NewEvent("order.created", fmt.Sprintf("order-%d", i), fmt.Sprintf("user-%d", 1+i%4))
		e.ID = sampleID(i)
		events = append(events, e)
	}
	paid := outbox.NewEvent("order.paid", "order-x", "user-1")
	paid.ID = sampleID(61)
	events = append(events, paid)
	if err := store.Enqueue(ctx, start, events...); err != nil {
		t.Fatal(err)
	}
	p, err := outbox.NewProcessor(store, outbox.Handlers{
		"order.created": outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
			if n, _ := strconv.Atoi(strings.TrimPrefix(e.EntityID, "order-")); n <= 8 {
				return nil
			}
			return errors.New("503 Service Unavailable")
		}),
		"order.paid": outbox.HandlerFunc(func(ctx context.Context, e outbox.Event) error {
			return outbox.Permanent(errors.New("400 Bad Request: unknown order"))
		}),
	}, outbox.Config{Clock: clock, Owner: "relay-1", BatchSize: 100, Retry: outbox.RetryPolicy{Jitter: -1},
		Breaker: outbox.BreakerConfig{Threshold: -1}, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	// Attempts at 0s, 2s (after the 1s delay) and 8s (after 5s); the next is 30s later.
	for _, at := range []time.Duration{0, 2 * time.Second, 8 * time.Second} {
		clock.Set(start.Add(at))
		if _, err := p.Drain(ctx); err != nil {
			t.Fatal(err)
		}
	}
	clock.Set(start.Add(time.Minute))
	return sampleEnv(clock, b.dsn)
}

// pausedTypesScenario: adopting the outbox one type at a time. Four FitIQ types are
// paused; a progress entry was delivered by a relay scoped to its type, and a
// physical attribute waits for its type to be resumed.
func pausedTypesScenario(t *testing.T) Env {
	b := sqliteBackend(t)
	store := migrated(t, b)
	start := time.Date(2026, 12, 1, 14, 11, 18, 0, time.UTC)
	clock := outboxtest.NewClock(start)
	env := sampleEnv(clock, b.dsn)
	if r := runEnv(t, env, "pause", "--type", "physicalAttribute", "--type", "activitySnapshot", "--type", "profileMetadata", "--type", "profilePhysical"); r.code != ExitOK {
		t.Fatalf("pause: %v", r)
	}
	clock.Advance(20 * time.Second)
	ctx := context.Background()
	weight := outbox.NewEvent("physicalAttribute", "weight-1", "user-1")
	weight.ID = sampleID(1)
	waist := outbox.NewEvent("progressEntry", "waist-1", "user-1")
	waist.ID = sampleID(2)
	if err := store.Enqueue(ctx, clock.Now(), weight, waist); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second)
	p, err := outbox.NewProcessor(store, outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil }),
		outbox.Config{Clock: clock, Types: []string{"progressEntry"}, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Advance(30 * time.Second)
	return env
}

// logBehindScenario: the writers moved onto the log layout 20 minutes ago, and the
// relays were not restarted with --layout=log: they drain the events table, and the
// two events appended to the log since wait.
func logBehindScenario(t *testing.T) Env {
	b := sqliteBackend(t)
	store := migrated(t, b)
	start := time.Date(2026, 12, 1, 15, 2, 40, 0, time.UTC)
	clock := outboxtest.NewClock(start)
	env := sampleEnv(clock, b.dsn)
	if r := runEnv(t, env, "migrate", "--layout=log"); r.code != ExitOK {
		t.Fatalf("migrate --layout=log: %v", r)
	}
	if r := runEnv(t, Env{Stdin: strings.NewReader(`{"type":"order.created","entity_id":"order-4","ordering_key":"order-4"}
{"type":"order.paid","entity_id":"order-4","ordering_key":"order-4"}
`), Getenv: env.Getenv}, "enqueue", "--layout=log", "--jsonl"); r.code != ExitOK {
		t.Fatalf("enqueue --layout=log: %v", r)
	}
	// The log keeps when each event was appended, by the system's clock: the scenario's.
	db, err := sqlite.Open(strings.TrimPrefix(b.dsn, "sqlite:"), sqlite.OpenConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE outbox_log SET created_at = ? + (seq - 1) * 1000000`, start.UnixMicro()); err != nil {
		t.Fatal(err)
	}
	// And the IDs the sample shows (ls --layout=log).
	for seq, id := range []string{sampleID(4), sampleID(5)} {
		if _, err := db.Exec(`UPDATE outbox_log SET id = ? WHERE seq = ?`, id, seq+1); err != nil {
			t.Fatal(err)
		}
	}
	// A table event of the last writer on the table, delivered by the table's relay.
	clock.Advance(17 * time.Minute)
	ctx := context.Background()
	e := outbox.NewEvent("order.created", "order-3", "user-1")
	e.ID = sampleID(3)
	if err := store.Enqueue(ctx, clock.Now(), e); err != nil {
		t.Fatal(err)
	}
	p, err := outbox.NewProcessor(store, outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil }),
		outbox.Config{Clock: clock, Logger: outboxtest.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	clock.Set(start.Add(20 * time.Minute))
	return env
}

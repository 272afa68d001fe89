package cli

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/mysql"
	"github.com/fitiq/outbox/postgres"
	"github.com/fitiq/outbox/sqlite"
)

// The enqueue command: events written from scripts and by operators, validated as the
// library validates them, all of one invocation in one transaction.
type enqueueOpts struct {
	typ, entity, user, key string
	id                     string
	priority, maxAttempts  int
	newRecord              bool
	metadata               listFlag
	payload, payloadFile   string
	jsonl                  bool
	layout                 string
}

var enqueueCmd = &command{
	name: "enqueue", args: "--type T --entity ID [flags] | --jsonl < events.jsonl", needsDSN: true,
	summary: "Write one event, or many from JSON lines on stdin, in one transaction.",
	help: `
One event from flags, its payload from --payload, --payload-file FILE, or --payload-file -
(stdin); or, with --jsonl, one event per line of stdin, each a JSON object with the keys
  id, type, entity_id, user_id, ordering_key, priority, max_attempts, is_new_record,
  metadata (an object of strings), payload (any JSON)
of which type and entity_id are required. Every event is checked as the library checks
it (type and entity ID 1 to 255 bytes, payload valid JSON of at most 1 MiB, an ID that is
a UUID, …) before anything is written; all of them are then written in one transaction,
so either every event is written or none is. A bad one is named, by its flag or by its
line and key, and the command exits 2 having written nothing.

Prints the ID of each event written, one per line, in input order. Without --id (or
"id") an event gets a new UUIDv7. In the events table an ID is unique, so a retried
script that gives IDs is idempotent there: an ID already in the table is refused, and
nothing is written. The log does not look IDs up, so there an ID already used is not
refused; receivers deduplicate on it.

The events go where the store's relays look for them: on the event log when the store
has one (a new outbox on PostgreSQL or SQLite; docs/log-layout.md), in the events table
otherwise; --layout=table or --layout=log says which.

Examples:
  outbox enqueue --type order.created --entity order-1 --user alice --payload '{"total":42}'
  outbox enqueue --type order.shipped --entity order-1 --ordering-key order-1 --metadata source=backfill --payload-file order.json
  jq -c '{type: "order.created", entity_id: .id, payload: .}' orders.json | outbox enqueue --jsonl
  outbox enqueue --layout=table --type order.created --entity order-2 --ordering-key order-2`,
	flags: func(fs *flag.FlagSet) any {
		o := &enqueueOpts{}
		fs.StringVar(&o.typ, "type", "", "the event's type, e.g. order.created (required without --jsonl)")
		fs.StringVar(&o.entity, "entity", "", "the entity the event is about (required without --jsonl)")
		fs.StringVar(&o.user, "user", "", "the user the event belongs to")
		fs.StringVar(&o.key, "ordering-key", "", "events of one key are delivered one at a time, in the order written")
		fs.StringVar(&o.id, "id", "", "the event's ID, a UUID (default: a new UUIDv7)")
		fs.IntVar(&o.priority, "priority", 0, "higher is delivered first")
		fs.IntVar(&o.maxAttempts, "max-attempts", 0, "attempts before the event is given up (default: the relay's --max-attempts)")
		fs.BoolVar(&o.newRecord, "new-record", false, "the event announces a create (is_new_record)")
		fs.Var(&o.metadata, "metadata", "metadata entry key=value (repeatable)")
		fs.StringVar(&o.payload, "payload", "", "the JSON payload")
		fs.StringVar(&o.payloadFile, "payload-file", "", "read the JSON payload from this file ('-': stdin)")
		fs.BoolVar(&o.jsonl, "jsonl", false, "read events from stdin, one JSON object per line")
		layoutFromStoreFlag(fs, &o.layout)
		return o
	},
	run: runEnqueue,
}

func runEnqueue(ctx context.Context, env *Env, c *call) error {
	o := c.opts.(*enqueueOpts)
	if err := noArgs(c); err != nil {
		return err
	}
	var (
		events []*outbox.Event
		where  []string // where each event came from, for messages: "line 3", or "" for flags
		err    error
	)
	if o.jsonl {
		if set := o.singleFlagsSet(); len(set) > 0 {
			verb := "does"
			if len(set) > 1 {
				verb = "do"
			}
			return usagef("--jsonl reads every field from stdin; %s %s not apply", strings.Join(set, ", "), verb)
		}
		events, where, err = readJSONLines(env.stdin())
	} else {
		var e *outbox.Event
		e, err = o.event(env)
		events, where = []*outbox.Event{e}, []string{""}
	}
	if err != nil {
		return err
	}
	if len(events) == 0 {
		fmt.Fprintln(env.Stderr, "outbox enqueue: no events on stdin: nothing written")
		return nil
	}
	d, err := parseDSN(c.dsn)
	if err != nil {
		return err
	}
	if err := checkLayout(o.layout, d); err != nil {
		return err
	}
	s, err := d.open(ctx, false, c.timeout)
	if err != nil {
		return err
	}
	defer s.close()
	if o.layout, err = resolveLayout(ctx, o.layout, d, s, c.timeout, true); err != nil {
		return err
	}
	write := func(ctx context.Context, chunks [][]*outbox.Event) error {
		return enqueueInOneTx(ctx, s.Store, env.Clock.Now(), chunks)
	}
	if o.layout == layoutLog {
		l, err := openLog(ctx, d, s, c.timeout)
		if err != nil {
			return err
		}
		defer l.close()
		write = l.appendInOneTx
	}
	given := make([]bool, len(events)) // the IDs the input gave, which may be in the outbox already
	for i, e := range events {
		given[i] = e.ID != ""
	}
	chunks := enqueueChunks(events)
	tctx, cancel := context.WithTimeout(ctx, time.Duration(len(chunks)+1)*c.timeout)
	defer cancel()
	if err := write(tctx, chunks); err != nil {
		exists := func(id string) bool {
			gctx, cancel := context.WithTimeout(ctx, c.timeout)
			defer cancel()
			_, err := s.Get(gctx, id)
			return err == nil
		}
		return enqueueFailed(timedOut(err, c.timeout), events, where, given, exists)
	}
	var out bytes.Buffer
	for _, e := range events {
		out.WriteString(e.ID + "\n")
	}
	_, err = env.Stdout.Write(out.Bytes())
	return err
}

// stdin is the command's standard input: Env.Stdin, or the process's.
func (env *Env) stdin() io.Reader {
	if env.Stdin != nil {
		return env.Stdin
	}
	return os.Stdin
}

// singleFlagsSet names the flags of a single event that were given.
func (o *enqueueOpts) singleFlagsSet() []string {
	var set []string
	for _, f := range []struct {
		name string
		on   bool
	}{
		{"--type", o.typ != ""}, {"--entity", o.entity != ""}, {"--user", o.user != ""},
		{"--ordering-key", o.key != ""}, {"--id", o.id != ""}, {"--priority", o.priority != 0},
		{"--max-attempts", o.maxAttempts != 0}, {"--new-record", o.newRecord},
		{"--metadata", len(o.metadata) > 0}, {"--payload", o.payload != ""}, {"--payload-file", o.payloadFile != ""},
	} {
		if f.on {
			set = append(set, f.name)
		}
	}
	return set
}

// flagOf names the flag that sets a field of outbox.Event, for the library's errors.
var flagOf = map[string]string{
	"ID": "--id", "Type": "--type", "EntityID": "--entity", "UserID": "--user", "OrderingKey": "--ordering-key",
	"MaxAttempts": "--max-attempts", "Metadata": "--metadata", "Payload": "the payload",
}

// keyOf names the JSON key that sets a field of outbox.Event.
var keyOf = map[string]string{
	"ID": "id", "Type": "type", "EntityID": "entity_id", "UserID": "user_id", "OrderingKey": "ordering_key",
	"MaxAttempts": "max_attempts", "Metadata": "metadata", "Payload": "payload",
}

// event builds and checks the event the flags describe.
func (o *enqueueOpts) event(env *Env) (*outbox.Event, error) {
	e := &outbox.Event{
		ID: o.id, Type: o.typ, EntityID: o.entity, UserID: o.user, OrderingKey: o.key,
		Priority: o.priority, MaxAttempts: o.maxAttempts, IsNewRecord: o.newRecord,
	}
	for _, kv := range o.metadata {
		k, v, ok := strings.Cut(kv, "=")
		switch {
		case !ok:
			return nil, usagef("--metadata %q: want key=value", kv)
		case k == "":
			return nil, usagef("--metadata %q: the key is empty", kv)
		}
		if _, dup := e.Metadata[k]; dup {
			return nil, usagef("--metadata: the key %q is given twice", k)
		}
		if e.Metadata == nil {
			e.Metadata = map[string]string{}
		}
		e.Metadata[k] = v
	}
	switch {
	case o.payload != "" && o.payloadFile != "":
		return nil, usagef("give --payload or --payload-file, not both")
	case o.payload != "":
		e.Payload = json.RawMessage(strings.TrimSpace(o.payload))
	case o.payloadFile != "":
		name, r := o.payloadFile, io.Reader(nil)
		if name == "-" {
			name, r = "stdin", env.stdin()
		} else {
			f, err := os.Open(name)
			if err != nil {
				return nil, usagef("--payload-file: %v", err)
			}
			defer f.Close()
			r = f
		}
		// One byte over the limit is enough to refuse it.
		b, err := io.ReadAll(io.LimitReader(r, outbox.DefaultMaxPayloadBytes+1))
		if err != nil {
			return nil, usagef("--payload-file: read %s: %v", name, err)
		}
		b = bytes.TrimSpace(b)
		if len(b) == 0 {
			return nil, usagef("--payload-file: %s is empty (leave the flag out for an event without a payload)", name)
		}
		e.Payload = json.RawMessage(b)
	}
	if err := checkEvent(e); err != nil {
		var fe *outbox.FieldError
		if errors.As(err, &fe) {
			return nil, usagef("%s %s", cmpOr(flagOf[fe.Field], fe.Field), fe.Problem)
		}
		return nil, usagef("%v", err)
	}
	return e, nil
}

// checkEvent is what the library checks before it writes an event, and what a store
// checks beyond it (PostgreSQL refuses a payload that is not UTF-8).
func checkEvent(e *outbox.Event) error {
	if err := e.Validate(outbox.DefaultMaxPayloadBytes); err != nil {
		return err
	}
	if !utf8.Valid(e.Payload) {
		return &outbox.FieldError{Field: "Payload", Problem: "is not valid UTF-8"}
	}
	return nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// jsonlEvent is one line of --jsonl.
type jsonlEvent struct {
	ID          string            `json:"id"`
	Type        string            `json:"type"`
	EntityID    string            `json:"entity_id"`
	UserID      string            `json:"user_id"`
	OrderingKey string            `json:"ordering_key"`
	Priority    int               `json:"priority"`
	MaxAttempts int               `json:"max_attempts"`
	IsNewRecord bool              `json:"is_new_record"`
	Metadata    map[string]string `json:"metadata"`
	Payload     json.RawMessage   `json:"payload"`
}

const jsonlKeys = "id, type, entity_id, user_id, ordering_key, priority, max_attempts, is_new_record, metadata, payload"

// maxLine bounds one line of --jsonl: a payload at the limit, escaped, and the rest.
const maxLine = 2*outbox.DefaultMaxPayloadBytes + 64<<10

// readJSONLines reads one event per non-blank line of r and checks each; the first bad
// line is an error naming it.
func readJSONLines(r io.Reader) ([]*outbox.Event, []string, error) {
	br := bufio.NewReader(r)
	var (
		events []*outbox.Event
		where  []string
		lineOf = map[string]int{} // event ID → line, for IDs given twice
	)
	for n := 1; ; n++ {
		line, err := readLine(br)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, usagef("line %d: %v", n, err)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			e, perr := parseJSONLine(line)
			if perr != nil {
				return nil, nil, usagef("line %d: %s", n, perr)
			}
			if e.ID != "" {
				id, _ := outbox.CanonicalID(e.ID) // checked by parseJSONLine
				if first, dup := lineOf[id]; dup {
					return nil, nil, usagef("line %d: id %s is also on line %d", n, e.ID, first)
				}
				lineOf[id] = n
			}
			events = append(events, e)
			where = append(where, fmt.Sprintf("line %d", n))
		}
		if errors.Is(err, io.EOF) {
			return events, where, nil
		}
	}
}

// readLine reads one line without its end, refusing one longer than maxLine.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return nil, fmt.Errorf("longer than %d bytes", maxLine)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimSuffix(line, []byte("\n")), err
	}
}

func parseJSONLine(line []byte) (*outbox.Event, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	var j jsonlEvent
	if err := dec.Decode(&j); err != nil {
		return nil, jsonProblem(err)
	}
	if dec.More() {
		return nil, errors.New("more than one JSON value on the line (want one object per line)")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one JSON value on the line (want one object per line)")
	}
	e := &outbox.Event{
		ID: j.ID, Type: j.Type, EntityID: j.EntityID, UserID: j.UserID, OrderingKey: j.OrderingKey,
		Priority: j.Priority, MaxAttempts: j.MaxAttempts, IsNewRecord: j.IsNewRecord, Metadata: j.Metadata,
	}
	if p := bytes.TrimSpace(j.Payload); len(p) > 0 && !bytes.Equal(p, []byte("null")) {
		e.Payload = json.RawMessage(p)
	}
	if err := checkEvent(e); err != nil {
		var fe *outbox.FieldError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("%s %s", cmpOr(keyOf[fe.Field], fe.Field), fe.Problem)
		}
		return nil, err
	}
	return e, nil
}

// jsonProblem says what is wrong with a line in the words of its keys.
func jsonProblem(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te) && te.Field == "":
		return fmt.Errorf("want a JSON object, got a JSON %s", te.Value)
	case errors.As(err, &te) && te.Field == "metadata" && te.Type.Kind() == reflect.String:
		return fmt.Errorf("metadata: every value must be a string, got a JSON %s", te.Value)
	case errors.As(err, &te):
		want := te.Type.Kind().String()
		switch {
		case te.Type.Kind() == reflect.String:
			want = "a string"
		case te.Type.Kind() == reflect.Int:
			want = "an integer"
		case te.Type.Kind() == reflect.Bool:
			want = "true or false"
		case te.Type.Kind() == reflect.Map:
			want = "an object of strings"
		}
		return fmt.Errorf("%s: want %s, got a JSON %s", te.Field, want, te.Value)
	case errors.As(err, &se):
		return fmt.Errorf("not JSON: %v", err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return fmt.Errorf("unknown key %s (want %s)", strings.TrimPrefix(err.Error(), "json: unknown field "), jsonlKeys)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("not JSON: the object is cut short")
	}
	return fmt.Errorf("not JSON: %v", err)
}

// enqueueChunks splits events into the batches written one INSERT at a time: at most
// 500 events and about 4 MiB each, so that no statement outgrows a server's packet limit
// (MySQL's max_allowed_packet).
func enqueueChunks(events []*outbox.Event) [][]*outbox.Event {
	const maxEvents, maxBytes = 500, 4 << 20
	var chunks [][]*outbox.Event
	start, size := 0, 0
	for i, e := range events {
		n := len(e.Payload) + len(e.Type) + len(e.EntityID) + len(e.UserID) + len(e.OrderingKey) + 64
		for k, v := range e.Metadata {
			n += len(k) + len(v) + 8
		}
		if i > start && (i-start == maxEvents || size+n > maxBytes) {
			chunks = append(chunks, events[start:i])
			start, size = i, 0
		}
		size += n
	}
	return append(chunks, events[start:])
}

// enqueueInOneTx writes the chunks in one transaction of the store's.
func enqueueInOneTx(ctx context.Context, s outbox.Store, now time.Time, chunks [][]*outbox.Event) error {
	switch st := s.(type) {
	case *sqlite.Store:
		return st.Transact(ctx, func(tx *sql.Tx) error {
			return eachChunk(chunks, func(c []*outbox.Event) error { return st.EnqueueTx(ctx, tx, c...) })
		})
	case *mysql.Store:
		return st.Transact(ctx, func(tx *sql.Tx) error {
			return eachChunk(chunks, func(c []*outbox.Event) error { return st.EnqueueTx(ctx, tx, c...) })
		})
	case *postgres.Store:
		return st.Transact(ctx, func(tx pgx.Tx) error {
			return eachChunk(chunks, func(c []*outbox.Event) error { return st.EnqueueTx(ctx, tx, c...) })
		})
	}
	return s.Enqueue(ctx, now, slices.Concat(chunks...)...)
}

func eachChunk(chunks [][]*outbox.Event, fn func([]*outbox.Event) error) error {
	for _, c := range chunks {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

// enqueueFailed says that nothing was written, and names the line of the event the
// store refused: the one whose ID the error names, or, for an ID already used that the
// error does not name (MySQL's), the first given ID found in the outbox. Refused input
// exits 2.
func enqueueFailed(err error, events []*outbox.Event, where []string, given []bool, exists func(id string) bool) error {
	msg := err.Error()
	line := -1
	for i, e := range events {
		if e.ID != "" && strings.Contains(strings.ToLower(msg), strings.ToLower(e.ID)) {
			line = i
			break
		}
	}
	var fe *outbox.FieldError
	if line < 0 && errors.As(err, &fe) && fe.Field == "ID" && strings.Contains(fe.Problem, "already used") {
		for i, e := range events {
			if given[i] && exists(e.ID) {
				line = i
				msg = strings.Replace(msg, "ID is already", "ID "+e.ID+" is already", 1)
				break
			}
		}
	}
	if line >= 0 && where[line] != "" {
		msg = where[line] + ": " + msg
	}
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		return &exitError{code: ee.code, msg: ee.msg + " (nothing written)"}
	case errors.Is(err, outbox.ErrInvalid):
		return usagef("%s (nothing written)", msg)
	}
	return fmt.Errorf("%s (nothing written)", msg)
}

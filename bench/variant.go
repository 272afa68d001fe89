package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/fitiq/outbox/postgres"
)

// A consumer spec names a system and its configuration, e.g. "outbox:b=1000,c=100,r=2",
// "river:w=10000", "watermill", "log-relay:b=1000" (keys: b batch size, c max concurrent,
// k batches in flight per processor, r processors; "limit:b=1000" is the store's claim
// and settle statements run back to back by a bare loop at that batch size, no
// processor; w River MaxWorkers, sb Watermill SubscribeBatchSize). No keys means the
// system's defaults.
//
// The log layout's consumers run on the log-tx system: "log-relay" is postgres.LogRelay
// (b its BatchSize; c its MaxConcurrent with a per-event Handler, and without c a
// BatchHandler receives the events), and "log-limit:b=1000" is the log cursor's Read
// and Ack run back to back by a bare loop, no relay. o=1 gives every event of the
// backlog an ordering key (its entity), for outbox, limit, log-relay and log-limit.
type spec struct {
	System string
	V      variant
}

// Spec names that are not systems but consumers of one.
const (
	specLimit    = "limit"     // the table layout's floor, on the outbox system
	specLogRelay = "log-relay" // postgres.LogRelay, on the log-tx system
	specLogLimit = "log-limit" // the log cursor's floor, on the log-tx system
)

func parseSpecs(s string) ([]spec, error) {
	var out []spec
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		sp, err := parseSpec(part)
		if err != nil {
			return nil, err
		}
		out = append(out, sp)
	}
	return out, nil
}

// specKeys are the keys each spec name takes.
var specKeys = map[string]string{
	"outbox":     "b c k r o",
	specLimit:    "b o",
	"river":      "w",
	"watermill":  "sb",
	specLogRelay: "b c o",
	specLogLimit: "b o",
}

func parseSpec(s string) (spec, error) {
	name, opts, _ := strings.Cut(s, ":")
	sp := spec{System: name}
	switch name {
	case "outbox", "river", "watermill":
	case specLimit:
		// The floor of our SQL: the store's claim and settle run back to back.
		sp.System, sp.V.Floor = "outbox", true
	case specLogRelay:
		sp.System = "log-tx"
	case specLogLimit:
		// The floor of the log's SQL: the cursor's read and ack run back to back.
		sp.System, sp.V.Floor = "log-tx", true
	default:
		return sp, fmt.Errorf("consumer %q: unknown system %q (want outbox, limit, river, watermill, log-relay or log-limit)", s, name)
	}
	allowed := strings.Fields(specKeys[name])
	if opts != "" {
		for kv := range strings.SplitSeq(opts, ",") {
			k, v, ok := strings.Cut(kv, "=")
			n, err := strconv.Atoi(v)
			if !ok || err != nil || n <= 0 {
				return sp, fmt.Errorf("consumer %q: %q is not key=positive number", s, kv)
			}
			if !slices.Contains(allowed, k) {
				return sp, fmt.Errorf("consumer %q: unknown key %q for %s", s, k, name)
			}
			switch k {
			case "b":
				sp.V.BatchSize = n
			case "c":
				sp.V.MaxConcurrent = n
			case "k":
				sp.V.BatchesInFlight = n
			case "r":
				sp.V.Relays = n
			case "w":
				sp.V.Workers = n
			case "sb":
				sp.V.SubscribeBatch = n
			case "o":
				if n != 1 {
					return sp, fmt.Errorf("consumer %q: %q: o takes 1 (every event keyed by its entity)", s, kv)
				}
				sp.V.Keyed = true
			}
		}
	}
	// A relay without c hands its batches to a BatchHandler; c asks for a per-event
	// Handler, that many keys at once, as the outbox processors' receiver is.
	sp.V.BatchHandler = name == specLogRelay && sp.V.MaxConcurrent == 0
	sp.V.Label = sp.label()
	return sp, nil
}

// label is the spec as it appears in results: the system name, then its settings.
func (sp spec) label() string {
	v := sp.V
	keyed := ""
	if v.Keyed {
		keyed = "-keyed"
	}
	switch sp.System {
	case "outbox":
		if v.Floor {
			return fmt.Sprintf("limit-b%d%s", orDefault(v.BatchSize, 10), keyed)
		}
		if v.BatchSize == 0 && v.MaxConcurrent == 0 && v.BatchesInFlight == 0 && v.Relays == 0 {
			return "outbox" + keyed
		}
		return fmt.Sprintf("outbox-b%d-c%d-k%d-r%d%s", orDefault(v.BatchSize, 10), orDefault(v.MaxConcurrent, 3),
			orDefault(v.BatchesInFlight, 1), orDefault(v.Relays, 1), keyed)
	case "log-tx":
		b := orDefault(v.BatchSize, postgres.DefaultLogRelayBatchSize)
		if v.Floor {
			return fmt.Sprintf("log-limit-b%d%s", b, keyed)
		}
		if v.MaxConcurrent != 0 {
			return fmt.Sprintf("log-relay-b%d-c%d%s", b, v.MaxConcurrent, keyed)
		}
		return fmt.Sprintf("log-relay-b%d%s", b, keyed)
	case "river":
		return fmt.Sprintf("river-w%d", orDefault(v.Workers, riverDefaultWorkers))
	case "watermill":
		if v.SubscribeBatch != 0 {
			return fmt.Sprintf("watermill-sb%d", v.SubscribeBatch)
		}
	}
	return sp.System
}

// limitOf is the limit row a consumer is read against: a floor spec of the same system
// (the same layout's SQL in a bare loop), preferring the same batch size and keys, then
// the same batch size, then the first. It is "" for a floor itself, and for a system
// without floors among specs.
func limitOf(sp spec, specs []spec) string {
	if sp.V.Floor {
		return ""
	}
	best, score := "", -1
	for _, f := range specs {
		if !f.V.Floor || f.System != sp.System {
			continue
		}
		s := 0
		if f.V.BatchSize == sp.V.BatchSize {
			s += 2
			if f.V.Keyed == sp.V.Keyed {
				s++
			}
		}
		if s > score {
			best, score = f.V.Label, s
		}
	}
	return best
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

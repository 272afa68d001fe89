package main

import (
	"fmt"
	"strconv"
	"strings"
)

// A consumer spec names a system and its configuration, e.g. "outbox:b=1000,c=100,r=2",
// "river:w=10000", "watermill" (keys: b batch size, c max concurrent, k batches in
// flight per processor, r processors; "limit:b=1000" is the store's claim and settle
// statements run back to back by a bare loop at that batch size, no processor;
// w River MaxWorkers, sb Watermill SubscribeBatchSize). No keys means the system's defaults.
type spec struct {
	System string
	V      variant
}

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

func parseSpec(s string) (spec, error) {
	name, opts, _ := strings.Cut(s, ":")
	sp := spec{System: name}
	switch name {
	case "outbox", "river", "watermill":
	case "limit":
		// The floor of our SQL: the store's claim and settle run back to back.
		sp.System, sp.V.Floor = "outbox", true
		name = "outbox"
	default:
		return sp, fmt.Errorf("consumer %q: unknown system %q (want outbox, limit, river or watermill)", s, name)
	}
	if opts != "" {
		for kv := range strings.SplitSeq(opts, ",") {
			k, v, ok := strings.Cut(kv, "=")
			n, err := strconv.Atoi(v)
			if !ok || err != nil || n <= 0 {
				return sp, fmt.Errorf("consumer %q: %q is not key=positive number", s, kv)
			}
			switch {
			case name == "outbox" && k == "b":
				sp.V.BatchSize = n
			case name == "outbox" && k == "c":
				sp.V.MaxConcurrent = n
			case name == "outbox" && k == "k":
				sp.V.BatchesInFlight = n
			case name == "outbox" && k == "r":
				sp.V.Relays = n
			case name == "river" && k == "w":
				sp.V.Workers = n
			case name == "watermill" && k == "sb":
				sp.V.SubscribeBatch = n
			default:
				return sp, fmt.Errorf("consumer %q: unknown key %q for %s", s, k, name)
			}
		}
	}
	sp.V.Label = sp.label()
	return sp, nil
}

// label is the spec as it appears in results: the system name, then its settings.
func (sp spec) label() string {
	v := sp.V
	switch sp.System {
	case "outbox":
		if v.Floor {
			return fmt.Sprintf("limit-b%d", orDefault(v.BatchSize, 10))
		}
		if v.BatchSize == 0 && v.MaxConcurrent == 0 && v.BatchesInFlight == 0 && v.Relays == 0 {
			return "outbox"
		}
		return fmt.Sprintf("outbox-b%d-c%d-k%d-r%d", orDefault(v.BatchSize, 10), orDefault(v.MaxConcurrent, 3),
			orDefault(v.BatchesInFlight, 1), orDefault(v.Relays, 1))
	case "river":
		return fmt.Sprintf("river-w%d", orDefault(v.Workers, riverDefaultWorkers))
	case "watermill":
		if v.SubscribeBatch != 0 {
			return fmt.Sprintf("watermill-sb%d", v.SubscribeBatch)
		}
	}
	return sp.System
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

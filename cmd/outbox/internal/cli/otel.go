package cli

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/fitiq/outbox/oteloutbox"
)

// defaultServiceName names the relay in traces when OTEL_SERVICE_NAME is not set.
const defaultServiceName = "outbox-relay"

// tracingWanted reports whether the relay should export traces: --otel, or the
// standard variables saying where to (an OTLP endpoint, or OTEL_TRACES_EXPORTER=otlp).
// OTEL_TRACES_EXPORTER=none and OTEL_SDK_DISABLED=true turn it off whatever else says.
func tracingWanted(flag bool, getenv func(string) string) (bool, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false, nil
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
	default:
		return false, usagef("OTEL_TRACES_EXPORTER=%q: the relay exports traces with otlp only (or none)", exp)
	}
	on := flag || getenv("OTEL_TRACES_EXPORTER") != "" ||
		getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	if !on {
		return false, nil
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := getenv(name); p != "" && p != "http/protobuf" && p != "grpc" {
			return false, usagef("%s=%q: the relay exports over http/protobuf or grpc", name, p)
		}
	}
	return true, nil
}

// otlpProtocol is the OTLP transport the variables ask for: http/protobuf (the
// specification's default) or grpc.
func otlpProtocol(getenv func(string) string) string {
	return cmp.Or(getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"), getenv("OTEL_EXPORTER_OTLP_PROTOCOL"), "http/protobuf")
}

// startTracing builds the relay's tracer provider exporting over OTLP, as the
// OTEL_* variables describe (the exporter reads the rest of them itself: headers,
// timeout, TLS), and returns the Tracing that instruments the processor and a
// function that flushes what is still buffered.
func startTracing(ctx context.Context, getenv func(string) string, roundTrips bool, log *slog.Logger) (*oteloutbox.Tracing, func(), error) {
	protocol := otlpProtocol(getenv)
	// The endpoint is passed explicitly (rather than left to the exporter's own reading
	// of the environment) so that the relay honours the environment it is handed. Over
	// HTTP the signal's path is appended to the base endpoint; gRPC takes it as is.
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if u := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); endpoint == "" && u != "" {
		endpoint = u
		if protocol == "http/protobuf" {
			endpoint = strings.TrimSuffix(u, "/") + "/v1/traces"
		}
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	if protocol == "grpc" {
		var opts []otlptracegrpc.Option
		if endpoint != "" {
			opts = append(opts, otlptracegrpc.WithEndpointURL(endpoint))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	} else {
		var opts []otlptracehttp.Option
		if endpoint != "" {
			opts = append(opts, otlptracehttp.WithEndpointURL(endpoint))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	}
	if err != nil {
		return nil, nil, usagef("OTLP exporter: %v", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(cmp.Or(getenv("OTEL_SERVICE_NAME"), defaultServiceName))))
	if err != nil {
		return nil, nil, fmt.Errorf("tracing resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	log.Info("exporting traces", "endpoint", redactURL(cmp.Or(endpoint, "the exporter's default")), "protocol", protocol)
	shutdown := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tp.Shutdown(sctx); err != nil {
			log.Warn("flushing traces failed", "err", err)
		}
	}
	return oteloutbox.New(oteloutbox.Config{TracerProvider: tp, RoundTrips: roundTrips}), shutdown, nil
}

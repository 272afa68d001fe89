package sqssink

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/fitiq/outbox"
)

// ParseURL reads a sink URL, as `outbox relay --sink` takes it, into a Config:
//
//	sqs://sqs.eu-west-1.amazonaws.com/123456789012/orders.fifo   the queue URL, https:// written sqs://
//	sns://arn:aws:sns:eu-west-1:123456789012:orders              the topic ARN after sns:// (or sns:///)
//
// Parameters, after '?': region=NAME (default: the one in the URL or ARN, else the
// SDK's), endpoint=URL (an API endpoint other than AWS's: a VPC endpoint, a local
// server). For an SQS host other than AWS's, the endpoint defaults to https://HOST.
// Credentials are never in the URL: they come from the SDK's chain.
func ParseURL(raw string) (Config, error) {
	bad := func(format string, args ...any) error {
		return &outbox.FieldError{Field: "sqs/sns URL", Problem: fmt.Sprintf(format, args...)}
	}
	var cfg Config
	body, query, _ := strings.Cut(raw, "?")
	params, err := url.ParseQuery(query)
	if err != nil {
		return cfg, bad("%q: parameters: %v", raw, err)
	}
	for k := range params {
		if !slices.Contains([]string{"region", "endpoint"}, k) {
			return cfg, bad("%q: unknown parameter %q (want region or endpoint)", raw, k)
		}
	}
	cfg.Region, cfg.Endpoint = params.Get("region"), params.Get("endpoint")
	switch {
	case strings.HasPrefix(body, "sqs://"):
		u, err := url.Parse("https://" + strings.TrimPrefix(body, "sqs://"))
		if err != nil || u.Host == "" || u.User != nil {
			return cfg, bad("%q: want sqs://HOST/ACCOUNT/QUEUE", raw)
		}
		cfg.QueueURL = u.String()
		if cfg.Endpoint == "" && hostRegion(u.Hostname()) == "" {
			cfg.Endpoint = "https://" + u.Host
		}
	case strings.HasPrefix(body, "sns://"):
		cfg.TopicARN = strings.TrimPrefix(strings.TrimPrefix(body, "sns://"), "/")
	default:
		return cfg, bad("%q: want sqs://… or sns://…", raw)
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

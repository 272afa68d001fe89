package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fitiq/outbox"
)

func TestIsUnavailable(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	cases := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"marked", outbox.Unavailable(errors.New("broker down")), true},
		{"marked and wrapped", fmt.Errorf("publish: %w", outbox.Unavailable(errors.New("x"))), true},
		{"refused dial inside a url.Error", &url.Error{Op: "Post", URL: "http://x", Err: dial}, true},
		{"name not found", &net.DNSError{Err: "no such host", Name: "api.invalid", IsNotFound: true}, true},
		{"read after connecting", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
		{"plain error", errors.New("500 Internal Server Error"), false},
		{"deadline", context.DeadlineExceeded, false},
		{"permanent wins", outbox.Permanent(outbox.Unavailable(errors.New("x"))), false},
	}
	for _, tc := range cases {
		if got := outbox.IsUnavailable(tc.err); got != tc.want {
			t.Errorf("%s: IsUnavailable(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// A part's Validate names its own field; the Config that holds it adds the path.
func TestValidateNamesTheFieldFromWhereItIsCalled(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{outbox.RetryPolicy{Jitter: 2}.Validate(), "Jitter"},
		{outbox.Config{Retry: outbox.RetryPolicy{Jitter: 2}}.Validate(), "Config.Retry.Jitter"},
		{outbox.BreakerConfig{Cooldown: -1}.Validate(), "Cooldown"},
		{outbox.Config{Breaker: outbox.BreakerConfig{Cooldown: -1}}.Validate(), "Config.Breaker.Cooldown"},
		{outbox.HealthRules{Window: -1}.Validate(), "Window"},
		{outbox.Config{Health: outbox.HealthRules{Window: -1}}.Validate(), "Config.Health.Window"},
		{outbox.Config{Retry: outbox.RetryPolicy{Delays: []time.Duration{time.Second, -1}}}.Validate(), "Config.Retry.Delays[1]"},
	}
	for _, c := range cases {
		var fe *outbox.FieldError
		if !errors.As(c.err, &fe) || fe.Field != c.want {
			t.Errorf("%v: field %v, want %s", c.err, fe, c.want)
		}
	}
}

// CleanError keeps a clean error as it is and gives any other a storable text, with
// the error still in the chain.
func TestCleanErrorKeepsTheChain(t *testing.T) {
	plain := errors.New("http 503 Service Unavailable")
	if got := outbox.CleanError(plain); got != plain {
		t.Fatalf("a clean error was wrapped: %v", got)
	}
	hostile := fmt.Errorf("answer: %w", outbox.Permanent(errors.New("bad\x00\xff"+strings.Repeat("é", 2000))))
	got := outbox.CleanError(hostile)
	text := got.Error()
	if !utf8.ValidString(text) || strings.ContainsAny(text, "\x00") || len(text) > outbox.MaxErrorLength {
		t.Fatalf("cleaned text %q (%d bytes) is not storable", text, len(text))
	}
	if !outbox.IsPermanent(got) {
		t.Fatal("the cleaned error lost its chain: Permanent is gone")
	}
	if outbox.CleanError(nil) != nil {
		t.Fatal("CleanError(nil) is not nil")
	}
}

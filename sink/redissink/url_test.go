package redissink_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/redissink"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url  string
		addr string // the address the client dials; empty: an error
		db   int
		err  string // part of the error
	}{
		{"redis://127.0.0.1:6379/0", "127.0.0.1:6379", 0, ""},
		{"redis://cache.internal", "cache.internal:6379", 0, ""},
		{"REDIS://127.0.0.2:16379/2", "127.0.0.2:16379", 2, ""},
		{"Rediss://cache.internal/3", "cache.internal:6379", 3, ""},
		{"redis://u:p%40ss@h:6380/1?dial_timeout=3s", "h:6380", 1, ""},
		{"redis://[::1]:6379/4", "[::1]:6379", 4, ""},
		{"redis://h/?db=5", "h:6379", 5, ""},
		{"redis:127.0.0.2:16379", "", 0, `has no "//" after "redis:"`},
		{"REDIS:127.0.0.2:16379", "", 0, `has no "//" after "redis:"`},
		{"redis:/127.0.0.2:16379", "", 0, `has no "//"`},
		{"rediss:h", "", 0, `has no "//" after "rediss:"`},
		{"redis:///0", "", 0, "names no host"},
		{"redis://", "", 0, "names no host"},
		{"redis://h/-1", "", 0, "database -1 is negative"},
		{"redis://h/?db=-1", "", 0, "database -1 is negative"},
		{"redis://h/zero", "", 0, "invalid database number"},
		{"redis://h/0/1", "", 0, "invalid URL path"},
		{"redis://h:0/0", "", 0, `port "0" is not a number from 1 to 65535`},
		{"redis://h:70000/0", "", 0, `port "70000"`},
		{"redis://[::1/0", "", 0, "is not a URL"},
		{"redis://h/0?pool=9", "", 0, "unexpected option: pool"},
		{"http://h", "", 0, "must start with redis:// or rediss://"},
		{"unix:///tmp/redis.sock", "", 0, "must start with redis:// or rediss://"},
		{"127.0.0.1:6379", "", 0, "is not a URL"},
		{"redis://u:secret@h/-1", "", 0, "negative"},
		{"redis://u:secret@[::1/0", "", 0, "is not a URL"},
		{"redis:u:secret@h", "", 0, `has no "//"`},
	}
	for _, tt := range tests {
		opts, err := redissink.ParseURL(tt.url)
		if tt.addr == "" {
			if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "redis URL") {
				t.Errorf("%s: ParseURL = %v, want an error about the redis URL: %q", tt.url, err, tt.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: the error shows the password: %v", tt.url, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.url, err)
			continue
		}
		if opts.Addr != tt.addr || opts.DB != tt.db || (opts.TLSConfig != nil) != strings.HasPrefix(strings.ToLower(tt.url), "rediss:") {
			t.Errorf("%s: addr %s, db %d, TLS %t; want %s, %d", tt.url, opts.Addr, opts.DB, opts.TLSConfig != nil, tt.addr, tt.db)
		}
	}
	if opts, err := redissink.ParseURL("redis://u:p%40ss@h:6380/1"); err != nil || opts.Username != "u" || opts.Password != "p@ss" {
		t.Errorf("user and password: %+v, %v", opts, err)
	}
}

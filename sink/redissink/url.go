package redissink

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/fitiq/outbox"
)

// ParseURL reads a Redis URL into client options, as redis.ParseURL does:
//
//	redis[s]://[[user]:password@]host[:port][/db][?param=value&…]
//
// (the port defaults to 6379, the database to 0; rediss connects with TLS; the
// parameters are go-redis's: dial_timeout=3s, read_timeout=…, pool_size=…). The scheme
// is case-insensitive. It refuses what redis.ParseURL would read as something else: a
// URL without "//" ("redis:host:6379", whose host go-redis takes for a path, to connect
// to localhost:6379), one without a host, a port out of range, a negative database.
// Errors name the offending part and never the password.
func ParseURL(s string) (*redis.Options, error) {
	bad := func(format string, args ...any) error {
		return &outbox.FieldError{Field: "redis URL", Problem: fmt.Sprintf(format, args...)}
	}
	u, err := url.Parse(s)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the message of a *url.Error quotes the URL, password and all
		}
		return nil, bad("is not a URL: %v", err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "redis" && scheme != "rediss" {
		return nil, bad("must start with redis:// or rediss://")
	}
	if rest := s[len(scheme)+1:]; !strings.HasPrefix(rest, "//") {
		return nil, bad(`has no "//" after %q (want %s://host:port/db): go-redis would take the host for a path and connect to localhost:6379`,
			scheme+":", scheme)
	}
	if u.Hostname() == "" {
		return nil, bad("names no host (want %s://host:port/db)", scheme)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, bad("port %q is not a number from 1 to 65535", p)
		}
	}
	u.Scheme = scheme
	opts, err := redis.ParseURL(u.String())
	if err != nil {
		return nil, bad("%v", err)
	}
	if opts.DB < 0 {
		return nil, bad("database %d is negative (want 0 or more)", opts.DB)
	}
	return opts, nil
}

package mysql

import (
	"fmt"
	"net"
	"net/url"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"
)

// ParseDSN reads a data source name in either of two forms: the driver's own
// ("user:pass@tcp(host:3306)/db?param=value") or a URL
// ("mysql://user:pass@host:3306/db?param=value", the port defaulting to 3306). Query
// parameters are the driver's (see github.com/go-sql-driver/mysql). The result is
// ready for gomysql.NewConnector.
func ParseDSN(dsn string) (*gomysql.Config, error) {
	if !strings.HasPrefix(dsn, "mysql://") {
		cfg, err := gomysql.ParseDSN(dsn)
		if err != nil {
			return nil, fmt.Errorf("outbox/mysql: malformed DSN: %w", err)
		}
		return cfg, nil
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: malformed DSN: %w", err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("outbox/mysql: malformed DSN %q: want mysql://user:pass@host:3306/database", u.Redacted())
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "3306")
	}
	db := strings.TrimPrefix(u.Path, "/")
	if strings.Contains(db, "/") {
		return nil, fmt.Errorf("outbox/mysql: malformed DSN %q: the path is one database name", u.Redacted())
	}
	cfg, err := gomysql.ParseDSN("tcp(" + addr + ")/" + db + "?" + u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("outbox/mysql: malformed DSN %q: %w", u.Redacted(), err)
	}
	if u.User != nil {
		cfg.User = u.User.Username()
		cfg.Passwd, _ = u.User.Password()
	}
	return cfg, nil
}

package kafkasink

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/fitiq/outbox"
)

// DefaultPort is the broker port assumed for a host given without one.
const DefaultPort = "9092"

const scheme = "kafka://"

// ParseURL reads a broker URL into the client options that reach the cluster:
//
//	kafka://[user:password@]host[:port][,host[:port]…][/][?param=value&…]
//
// Hosts are the bootstrap brokers (port 9092 when omitted); an IPv6 address is written
// in brackets ([::1]:9092). The scheme is case-insensitive. Parameters:
//
//	sasl=plain|scram-sha-256|scram-sha-512   authenticate as user:password from the URL
//	tls=true                                 connect with TLS, verifying against the system roots
//	tls_ca=/path/ca.pem                      verify against this PEM bundle instead (implies tls)
//	tls_server_name=name                     the name to verify the certificates against
//	tls_insecure=true                        do not verify the certificates (test clusters only)
//	client_id=name                           the client ID the brokers log
//
// The options add nothing about producing; franz-go's defaults (idempotent, acks=all)
// are what New requires. Errors name the offending part and never the password.
func ParseURL(s string) ([]kgo.Opt, error) {
	bad := func(format string, args ...any) error {
		return &outbox.FieldError{Field: "kafka URL", Problem: fmt.Sprintf(format, args...)}
	}
	// The scheme is case-insensitive (RFC 3986): KAFKA://… is kafka://….
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return nil, bad("must start with kafka://")
	}
	rest := s[len(scheme):]
	authority, tail := rest, ""
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority, tail = rest[:i], rest[i:]
	}
	path, rawQuery, _ := strings.Cut(tail, "?")
	if path != "" && path != "/" {
		return nil, bad("has a path %q; the topic is configured apart (kafkasink.Config.Topic, --subject)", path)
	}
	var user, pass string
	hasUser := false
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		info := authority[:i]
		authority = authority[i+1:]
		u, p, _ := strings.Cut(info, ":")
		var err1, err2 error
		user, err1 = url.PathUnescape(u)
		pass, err2 = url.PathUnescape(p)
		if err1 != nil || err2 != nil {
			return nil, bad("user or password is not properly escaped")
		}
		hasUser = true
	}
	if authority == "" {
		return nil, bad("names no broker (want kafka://host:port[,host:port…])")
	}
	var seeds []string
	for h := range strings.SplitSeq(authority, ",") {
		if h == "" {
			return nil, bad("has an empty broker in %q", authority)
		}
		addr, err := parseBroker(h)
		if err != nil {
			return nil, bad("%v", err)
		}
		seeds = append(seeds, addr)
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, bad("query: %v", err)
	}
	opts := []kgo.Opt{kgo.SeedBrokers(seeds...)}

	flag := func(name string) (bool, error) {
		v := q.Get(name)
		if v == "" {
			return false, nil
		}
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, bad("%s=%q is not true or false", name, v)
		}
		return b, nil
	}
	useTLS, err := flag("tls")
	if err != nil {
		return nil, err
	}
	insecure, err := flag("tls_insecure")
	if err != nil {
		return nil, err
	}
	ca, serverName := q.Get("tls_ca"), q.Get("tls_server_name")
	if useTLS || insecure || ca != "" || serverName != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName, InsecureSkipVerify: insecure}
		if ca != "" {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, bad("tls_ca: %v", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, bad("tls_ca: %s holds no PEM certificate", ca)
			}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}

	if mech := q.Get("sasl"); mech != "" {
		if !hasUser || user == "" {
			return nil, bad("sasl=%s needs user:password@ before the brokers", mech)
		}
		var m sasl.Mechanism
		switch strings.ToLower(mech) {
		case "plain":
			m = plain.Auth{User: user, Pass: pass}.AsMechanism()
		case "scram-sha-256":
			m = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
		case "scram-sha-512":
			m = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
		default:
			return nil, bad("sasl=%q is not plain, scram-sha-256 or scram-sha-512", mech)
		}
		opts = append(opts, kgo.SASL(m))
	} else if hasUser {
		return nil, bad("has a user but no sasl= mechanism")
	}
	if id := q.Get("client_id"); id != "" {
		opts = append(opts, kgo.ClientID(id))
	}
	for k := range q {
		switch k {
		case "tls", "tls_ca", "tls_server_name", "tls_insecure", "sasl", "client_id":
		default:
			return nil, bad("unknown parameter %q (want sasl, tls, tls_ca, tls_server_name, tls_insecure or client_id)", k)
		}
	}
	return opts, nil
}

// parseBroker reads one broker of the URL, host[:port], [IPv6][:port] or a bare IPv6
// address, into host:port.
func parseBroker(h string) (string, error) {
	host, port, err := net.SplitHostPort(h)
	if err != nil { // no port, or not host:port at all
		host, port = h, DefaultPort
		if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
			host = h[1 : len(h)-1]
		}
	}
	switch {
	case host == "":
		return "", fmt.Errorf("broker %q names no host", h)
	case strings.ContainsAny(host, "[]"):
		return "", fmt.Errorf("broker %q is not host, host:port, [IPv6] or [IPv6]:port", h)
	case strings.Contains(host, ":") || strings.HasPrefix(h, "["):
		if _, err := netip.ParseAddr(host); err != nil {
			return "", fmt.Errorf("broker %q: %q is not an IPv6 address", h, host)
		}
	default:
		if i := strings.IndexFunc(host, func(r rune) bool { return !hostRune(r) }); i >= 0 {
			return "", fmt.Errorf("broker %q: host %q contains %q", h, host, host[i])
		}
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return "", fmt.Errorf("broker %q has an invalid port", h)
	}
	return net.JoinHostPort(host, port), nil
}

func hostRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_'
}

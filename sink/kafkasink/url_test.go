package kafkasink_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/kafkasink"
)

func TestParseURL(t *testing.T) {
	t.Parallel()
	ca := filepath.Join(t.TempDir(), "notpem.txt")
	if err := os.WriteFile(ca, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		url   string
		opts  int    // options returned
		err   string // part of the error; empty: none
		seeds string // the seed brokers, when checked
	}{
		{"kafka://b1", 1, "", "b1:9092"},
		{"KAFKA://b1:9093", 1, "", "b1:9093"},
		{"Kafka://b1/?TLS=true", 0, `unknown parameter "TLS"`, ""}, // the scheme only is case-insensitive
		{"kafka://[::1]:9093,[::1],::1,10.0.0.1,kafka_1.internal", 1, "", "[::1]:9093,[::1]:9092,[::1]:9092,10.0.0.1:9092,kafka_1.internal:9092"},
		{"kafka://[::1", 0, "not host, host:port, [IPv6] or [IPv6]:port", ""},
		{"kafka://[::1]x", 0, "not host, host:port, [IPv6] or [IPv6]:port", ""},
		{"kafka://[b1]:9093", 0, `"b1" is not an IPv6 address`, ""},
		{"kafka://::g", 0, `"::g" is not an IPv6 address`, ""},
		{"kafka://b%201", 0, `contains '%'`, ""},
		{"kafka:b1:9092", 0, "must start with kafka://", ""},
		{"kafka:/b1", 0, "must start with kafka://", ""},
		{"kafka://b1:", 0, "invalid port", ""},
		{"kafka://b1:0", 0, "invalid port", ""},
		{"kafka://:9092", 0, "names no host", ""},
		{"kafka://b1:9093,b2,b3:19092/", 1, "", ""},
		{"kafka://b1/?tls=true", 2, "", ""},
		{"kafka://u:p%40ss@b1/?sasl=scram-sha-512&tls=1&client_id=relay", 4, "", ""},
		{"kafka://u:p@b1/?sasl=PLAIN", 2, "", ""},
		{"kafka://b1/?tls_insecure=true&tls_server_name=kafka.internal", 2, "", ""},
		{"http://b1", 0, "must start with kafka://", ""},
		{"kafka://", 0, "names no broker", ""},
		{"kafka://b1,,b2", 0, "empty broker", ""},
		{"kafka://b1:99999", 0, "invalid port", ""},
		{"kafka://b1/topic", 0, "has a path", ""},
		{"kafka://b1/?sasl=scram-sha-256", 0, "needs user:password@", ""},
		{"kafka://u:secret@b1/", 0, "no sasl= mechanism", ""},
		{"kafka://u:secret@b1/?sasl=gssapi", 0, "is not plain", ""},
		{"kafka://b1/?tls=maybe", 0, "not true or false", ""},
		{"kafka://b1/?tls_ca=" + ca, 0, "holds no PEM certificate", ""},
		{"kafka://b1/?acks=1", 0, `unknown parameter "acks"`, ""},
	}
	for _, tt := range tests {
		opts, err := kafkasink.ParseURL(tt.url)
		if tt.err != "" {
			if !errors.Is(err, outbox.ErrInvalid) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: ParseURL = %v, want an error about %q", tt.url, err, tt.err)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("%s: the error shows the password: %v", tt.url, err)
			}
			continue
		}
		if err != nil || len(opts) != tt.opts {
			t.Errorf("%s: %d options, %v; want %d", tt.url, len(opts), err, tt.opts)
			continue
		}
		if tt.seeds == "" {
			continue
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatal(err)
		}
		seeds, _ := cl.OptValue(kgo.SeedBrokers).([]string)
		cl.Close()
		if got := strings.Join(seeds, ","); got != tt.seeds {
			t.Errorf("%s: seed brokers %s, want %s", tt.url, got, tt.seeds)
		}
	}
}

// The URL's SASL settings authenticate against a cluster that requires SCRAM; a wrong
// password holds delivery instead of spending the event's attempts. (kfake drops the
// connection on a wrong password, so the sink cannot tell it from a broker going
// away: unreachable. A broker that answers SASL_AUTHENTICATION_FAILED, as Kafka does,
// is "credentials rejected": TestCredentialsRejectedHoldTheCluster.)
func TestSASLFromURL(t *testing.T) {
	t.Parallel()
	c := newCluster(t, 1, 1, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "relay", "s3cret"))
	produce := func(url string, within time.Duration) error {
		opts, err := kafkasink.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		return newSink(t, cl, testTopic).Handle(ctx, event("a", "e1"))
	}
	addr := c.ListenAddrs()[0]
	// A delivery that succeeds returns at once: its deadline only guards against a
	// busy machine. The refused one is held at its deadline.
	if err := produce("kafka://relay:s3cret@"+addr+"/?sasl=scram-sha-256", time.Minute); err != nil {
		t.Fatalf("with the right password: %v", err)
	}
	wantFault(t, produce("kafka://relay:wrong@"+addr+"/?sasl=scram-sha-256", 3*time.Second), outbox.ReasonUnreachable, "")
	auth := kgo.SASL(scram.Auth{User: "relay", Pass: "s3cret"}.AsSha256Mechanism())
	if n := len(readTopic(t, c, testTopic, auth)); n != 1 {
		t.Fatalf("topic holds %d records, want 1", n)
	}
}

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 and returns the
// server's TLS config and the PEM file a client verifies it with.
func selfSigned(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"kafka.test"},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pemPath := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(pemPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pemPath
}

// tls_ca= verifies the brokers against the given bundle; without it (system roots)
// the self-signed brokers are refused, and delivery is held: "TLS handshake failed".
func TestTLSFromURL(t *testing.T) {
	t.Parallel()
	srv, ca := selfSigned(t)
	c := newCluster(t, 1, 1, kfake.TLS(srv))
	produce := func(url string) error {
		opts, err := kafkasink.ParseURL(url)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // both answers come at once
		defer cancel()
		return newSink(t, cl, testTopic).Handle(ctx, event("a", "e1"))
	}
	addr := c.ListenAddrs()[0]
	if err := produce("kafka://" + addr + "/?tls_ca=" + ca); err != nil {
		t.Fatalf("verified against tls_ca: %v", err)
	}
	wantFault(t, produce("kafka://"+addr+"/?tls=true"), kafkasink.ReasonTLS, "")
}

package sink_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/outboxtest"
	"github.com/fitiq/outbox/sink/amqpsink"
	"github.com/fitiq/outbox/sink/httpsink"
	"github.com/fitiq/outbox/sink/kafkasink"
	"github.com/fitiq/outbox/sink/natssink"
	"github.com/fitiq/outbox/sink/redissink"
	"github.com/fitiq/outbox/sqlite"
)

// BenchmarkRelay measures relay throughput (events/s) from a SQLite store to each
// sink, at batch sizes 100 and 1000. "noop" is the baseline: the store's own cost of
// claiming and settling, with a handler that does nothing. Compare sinks against it:
//
//	OUTBOX_NATS_URL=… OUTBOX_AMQP_URL=… OUTBOX_REDIS_URL=… go test -run '^$' -bench Relay -count 6 ./sink/ | benchstat -
//
// "kafka" produces to a three-broker kfake cluster in the benchmark's own process, so
// it measures the sink and the client, with the fake brokers' work on the same CPUs.
func BenchmarkRelay(b *testing.B) {
	sinks := []struct {
		name string
		make func(b *testing.B) outbox.Handler
	}{
		{"noop", func(b *testing.B) outbox.Handler {
			return outbox.HandlerFunc(func(context.Context, outbox.Event) error { return nil })
		}},
		{"http", benchHTTP},
		{"nats", benchNATS},
		{"amqp", benchAMQP},
		{"kafka", benchKafka},
		{"redis", benchRedis},
	}
	for _, s := range sinks {
		for _, batch := range []int{100, 1000} {
			b.Run(fmt.Sprintf("sink=%s/batch=%d", s.name, batch), func(b *testing.B) {
				h := s.make(b)
				store := benchStore(b)
				p, err := outbox.NewProcessor(store, h, outbox.Config{BatchSize: batch, MaxConcurrent: 16, Logger: outboxtest.Discard})
				if err != nil {
					b.Fatal(err)
				}
				const perIter = 2000
				var relayed int
				var took time.Duration
				for b.Loop() {
					b.StopTimer()
					enqueue(b, store, perIter)
					b.StartTimer()
					start := time.Now()
					n, err := p.Drain(context.Background())
					took += time.Since(start)
					if err != nil || n != perIter {
						b.Fatalf("drained %d of %d: %v", n, perIter, err)
					}
					relayed += n
				}
				b.ReportMetric(float64(relayed)/took.Seconds(), "events/s")
			})
		}
	}
}

func benchStore(b *testing.B) *sqlite.Store {
	db, err := sqlite.Open(filepath.Join(b.TempDir(), "outbox.db"), sqlite.OpenConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if _, err := sqlite.Migrate(context.Background(), db); err != nil {
		b.Fatal(err)
	}
	s, err := sqlite.New(context.Background(), db, sqlite.Config{Logger: outboxtest.Discard})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func enqueue(b *testing.B, s *sqlite.Store, n int) {
	events := make([]*outbox.Event, n)
	for i := range events {
		events[i] = outbox.NewEvent("order.created", fmt.Sprintf("entity-%d", i), "user-1")
		events[i].Payload = []byte(`{"kind":"weight","quantity":72.5}`)
	}
	if err := s.Enqueue(context.Background(), time.Now(), events...); err != nil {
		b.Fatal(err)
	}
}

func benchHTTP(b *testing.B) outbox.Handler {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	s, err := httpsink.New(httpsink.Config{URL: srv.URL})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func benchNATS(b *testing.B) outbox.Handler {
	url := os.Getenv("OUTBOX_NATS_URL")
	if url == "" {
		b.Skip("OUTBOX_NATS_URL is not set")
	}
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	id := strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	name := "OUTBOXBENCH_" + id
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: name, Subjects: []string{"outboxbench." + id + ".>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	s, err := natssink.New(nc, natssink.Config{Subject: "outboxbench." + id + ".{type}"})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func benchAMQP(b *testing.B) outbox.Handler {
	url := os.Getenv("OUTBOX_AMQP_URL")
	if url == "" {
		b.Skip("OUTBOX_AMQP_URL is not set")
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatal(err)
	}
	id := strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	queue := "outboxbench." + id
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _, _ = ch.QueueDelete(queue, false, false, false) })
	if err := ch.QueueBind(queue, queue+".#", "amq.topic", false, nil); err != nil {
		b.Fatal(err)
	}
	s, err := amqpsink.New(amqpsink.Config{URL: url, RoutingKey: queue + ".{type}", Logger: outboxtest.Discard})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func benchKafka(b *testing.B) outbox.Handler {
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(6, "outboxbench"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	s, err := kafkasink.New(cl, kafkasink.Config{Topic: "outboxbench"})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func benchRedis(b *testing.B) outbox.Handler {
	url := os.Getenv("OUTBOX_REDIS_URL")
	if url == "" {
		b.Skip("OUTBOX_REDIS_URL is not set")
	}
	opts, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	b.Cleanup(func() { rdb.Close() })
	stream := "outboxbench." + strings.ReplaceAll(uuid.NewString()[:13], "-", "")
	b.Cleanup(func() { rdb.Del(context.Background(), stream, redissink.DedupKey(stream)) })
	s, err := redissink.New(rdb, redissink.Config{Stream: stream})
	if err != nil {
		b.Fatal(err)
	}
	return s
}

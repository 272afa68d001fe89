package cli

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/internal/cetest"
	"github.com/fitiq/outbox/sink"
	"github.com/fitiq/outbox/sink/pubsubsink"
	"github.com/fitiq/outbox/sink/sqssink"
)

// The same 20 events, over four ordering keys, relayed by `relay --once` with a
// CloudEvents envelope to each of four destinations from a store of its own (a relay
// completes an event at its first destination): HTTP (httptest, binary mode), Pub/Sub
// (pstest, binary), an SQS FIFO queue (moto, binary) and an SNS FIFO topic (moto, a
// FIFO queue subscribed for raw delivery, structured mode). Everything delivered is
// read back by the CloudEvents Go SDK (internal/cetest) and checked against the stored
// event: each event exactly once at each destination, with its id, type, subject,
// source, data and extensions, and each key's events in enqueue order where the
// destination orders them (Pub/Sub ordering keys, SQS and SNS FIFO message groups).
//
// The AWS SDK reads credentials and region from the process environment (its default
// chain, not Env.Getenv), so the test sets them, and PUBSUB_EMULATOR_HOST: not
// parallel. moto_server must be on PATH (or OUTBOX_MOTO_SERVER); without it the test
// skips, or fails when CI is set.
func TestRelayCloudEventsToAllDestinations(t *testing.T) {
	moto := startRelayMoto(t)

	// Pub/Sub: pstest, found through PUBSUB_EMULATOR_HOST as the client library has it.
	ps := pstest.NewServer()
	t.Cleanup(func() { _ = ps.Close() })
	conn, err := grpc.NewClient(ps.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	admin, err := pubsub.NewClient(context.Background(), "relay-all", option.WithGRPCConn(conn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = admin.Close() })
	if _, err := admin.TopicAdminClient.CreateTopic(t.Context(), &pubsubpb.Topic{Name: "projects/relay-all/topics/orders"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PUBSUB_EMULATOR_HOST", ps.Addr)

	// AWS: credentials and region through the SDK's environment, nothing from files or
	// instance metadata.
	const region, account = "us-east-1", "123456789012" // moto's default account
	noFile := filepath.Join(t.TempDir(), "none")
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "AKIAOUTBOXTEST000000", "AWS_SECRET_ACCESS_KEY": "outbox-test-secret",
		"AWS_SESSION_TOKEN": "", "AWS_REGION": region, "AWS_DEFAULT_REGION": region, "AWS_PROFILE": "",
		"AWS_CONFIG_FILE": noFile, "AWS_SHARED_CREDENTIALS_FILE": noFile, "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_ENDPOINT_URL": "", "AWS_ENDPOINT_URL_SQS": "", "AWS_ENDPOINT_URL_SNS": "",
	} {
		t.Setenv(k, v)
	}
	awsCfg := aws.Config{Region: region, Credentials: credentials.NewStaticCredentialsProvider("AKIAOUTBOXTEST000000", "outbox-test-secret", "")}
	sqsc := sqs.NewFromConfig(awsCfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(moto.url()) })
	snsc := sns.NewFromConfig(awsCfg, func(o *sns.Options) { o.BaseEndpoint = aws.String(moto.url()) })
	ctx := t.Context()
	fifo := map[string]string{"FifoQueue": "true"}
	if _, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("relay-ce.fifo"), Attributes: fifo}); err != nil {
		t.Fatal(err)
	}
	if _, err := sqsc.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String("relay-ce-sns.fifo"), Attributes: fifo}); err != nil {
		t.Fatal(err)
	}
	topic, err := snsc.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String("relay-ce.fifo"), Attributes: map[string]string{"FifoTopic": "true"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := snsc.Subscribe(ctx, &sns.SubscribeInput{
		TopicArn: topic.TopicArn, Protocol: aws.String("sqs"),
		Endpoint:   aws.String("arn:aws:sqs:" + region + ":" + account + ":relay-ce-sns.fifo"),
		Attributes: map[string]string{"RawMessageDelivery": "true"},
	}); err != nil {
		t.Fatal(err)
	}

	// HTTP: every request as the server got it.
	type request struct {
		req  *http.Request
		body []byte
	}
	var (
		mu   sync.Mutex
		reqs []request
	)
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, request{r, body})
		mu.Unlock()
	}))
	t.Cleanup(web.Close)

	// The events, IDs fixed so that every store holds the same ones.
	const n = 20
	var events []outbox.Event
	keyOrder := map[string][]string{} // ordering key: IDs in enqueue order
	for i := range n {
		key := fmt.Sprintf("order-%d", i%4)
		e := outbox.Event{
			ID: uuid.Must(uuid.NewV7()).String(), Type: []string{"order.created", "order.updated"}[i%2],
			EntityID: key, OrderingKey: key, UserID: "u1",
			Payload: json.RawMessage(fmt.Sprintf(`{"n":%d,"note":"caf\u00e9"}`, i)),
		}
		if i%5 == 0 {
			e.Metadata = map[string]string{"app": "checkout"}
		}
		events = append(events, e)
		keyOrder[key] = append(keyOrder[key], e.ID)
	}

	type delivered struct {
		ev    *event.Event
		mode  binding.Encoding
		group string // the ordering key or message group it came with, where the destination orders
	}
	const source = "https://shop.example.com/orders"
	relay := func(t *testing.T, dest string, args ...string) map[string]outbox.Event {
		t.Helper()
		b := sqliteBackend(t)
		s := migrated(t, b)
		for _, e := range events { // one at a time: a key's events in sequence order
			c := e
			if err := s.Enqueue(ctx, time.Now(), &c); err != nil {
				t.Fatal(err)
			}
		}
		r := runEnv(t, Env{}, append([]string{"relay", "--once", "--dsn", b.dsn, "--batch-size", "7", "--cloudevents-source", source}, args...)...)
		if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("0 pending, 0 retrying, 0 given up, %d completed", n)) {
			t.Fatalf("relay to %s %v: %v", dest, args, r)
		}
		stored := map[string]outbox.Event{}
		for _, e := range events {
			got, err := s.Get(ctx, e.ID)
			if err != nil {
				t.Fatal(err)
			}
			stored[e.ID] = got
		}
		return stored
	}
	// sqsMode is the mode an event goes to SQS or SNS in binary mode: binary when its
	// attributes (datacontenttype as Content-Type) fit SQS's ten message attributes, else structured.
	sqsMode := func(e outbox.Event) binding.Encoding {
		attrs, err := sink.CloudEventAttributes(e, source)
		if err != nil {
			return binding.EncodingUnknown // no mode: the check fails
		}
		if len(attrs) > sqssink.MaxAttributes { // datacontenttype among them, sent as Content-Type
			return binding.EncodingStructured
		}
		return binding.EncodingBinary
	}
	always := func(m binding.Encoding) func(outbox.Event) binding.Encoding {
		return func(outbox.Event) binding.Encoding { return m }
	}
	check := func(t *testing.T, dest string, stored map[string]outbox.Event, got []delivered, ordered bool, wantMode func(outbox.Event) binding.Encoding) {
		t.Helper()
		seen := map[string]int{}
		byGroup := map[string][]string{}
		for _, d := range got {
			e, ok := stored[d.ev.ID()]
			if !ok {
				t.Errorf("%s: an event that was not sent: %s", dest, d.ev)
				continue
			}
			seen[e.ID]++
			cetest.Check(t, d.ev, e, source)
			if want := wantMode(e); d.mode != want {
				t.Errorf("%s: event %s came in mode %v, want %v", dest, e.ID, d.mode, want)
			}
			if ordered {
				if d.group != e.OrderingKey {
					t.Errorf("%s: event %s came with key/group %q, want %q", dest, e.ID, d.group, e.OrderingKey)
				}
				byGroup[d.group] = append(byGroup[d.group], e.ID)
			}
		}
		for _, e := range events {
			if seen[e.ID] != 1 {
				t.Errorf("%s: event %s delivered %d times, want once", dest, e.ID, seen[e.ID])
			}
		}
		if !ordered {
			return
		}
		for key, want := range keyOrder {
			if g := strings.Join(byGroup[key], ","); g != strings.Join(want, ",") {
				t.Errorf("%s: key %s delivered as %s, want %s", dest, key, g, strings.Join(want, ","))
			}
		}
	}
	// receive reads a queue until it is empty, deleting what it read, in the order
	// SQS hands it out (a FIFO group's next message only after its previous one).
	receive := func(t *testing.T, dest, queue string) []delivered {
		t.Helper()
		var out []delivered
		deadline := time.Now().Add(30 * time.Second)
		for len(out) < n && time.Now().Before(deadline) {
			res, err := sqsc.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
				QueueUrl: aws.String(moto.url() + "/" + account + "/" + queue), MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
				MessageAttributeNames:       []string{"All"},
				MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll},
			})
			if err != nil {
				t.Fatalf("%s: receive: %v", dest, err)
			}
			for _, m := range res.Messages {
				h := map[string]any{}
				for k, v := range m.MessageAttributes {
					h[k] = aws.ToString(v.StringValue)
				}
				ev, mode, err := cetest.ToEvent(cetest.Message{Headers: h, Prefix: sqssink.CloudEventsPrefix, ContentType: sqssink.AttributeContentType, Body: []byte(aws.ToString(m.Body))})
				if err != nil {
					t.Fatalf("%s: the SDK cannot read a message (%v): %v %s", dest, h, err, aws.ToString(m.Body))
				}
				out = append(out, delivered{ev, mode, m.Attributes["MessageGroupId"]})
				if _, err := sqsc.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(moto.url() + "/" + account + "/" + queue), ReceiptHandle: m.ReceiptHandle}); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Anything more (a duplicate) would show now.
		res, err := sqsc.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: aws.String(moto.url() + "/" + account + "/" + queue), MaxNumberOfMessages: 10, WaitTimeSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) > 0 {
			t.Errorf("%s: %d messages more than the %d events", dest, len(res.Messages), n)
		}
		return out
	}

	t.Run("http", func(t *testing.T) {
		stored := relay(t, "http", "--sink", web.URL, "--envelope", "cloudevents-binary")
		mu.Lock()
		got := append([]request(nil), reqs...)
		mu.Unlock()
		var ds []delivered
		for _, g := range got {
			ev, mode, err := cetest.FromHTTP(g.req, g.body)
			if err != nil {
				t.Fatalf("the SDK reads %v: %v", g.req.Header, err)
			}
			ds = append(ds, delivered{ev: ev, mode: mode})
		}
		check(t, "http", stored, ds, false, always(binding.EncodingBinary))
	})
	t.Run("pubsub", func(t *testing.T) {
		stored := relay(t, "pubsub", "--sink", "pubsub://relay-all/orders", "--envelope", "cloudevents-binary")
		var ds []delivered
		for _, m := range ps.Messages() { // in publish order
			h := map[string]any{}
			for k, v := range m.Attributes {
				h[k] = v
			}
			ev, mode, err := cetest.ToEvent(cetest.Message{Headers: h, Prefix: pubsubsink.CloudEventsPrefix, ContentType: pubsubsink.AttributeContentType, Body: m.Data})
			if err != nil {
				t.Fatalf("the SDK reads %v: %v", m.Attributes, err)
			}
			ds = append(ds, delivered{ev, mode, m.OrderingKey})
		}
		check(t, "pubsub", stored, ds, true, always(binding.EncodingBinary))
	})
	t.Run("sqs-fifo", func(t *testing.T) {
		sinkURL := fmt.Sprintf("sqs://%s/%s/relay-ce.fifo?region=%s&endpoint=%s", moto.addr, account, region, moto.url())
		stored := relay(t, "sqs", "--sink", sinkURL, "--envelope", "cloudevents-binary")
		check(t, "sqs-fifo", stored, receive(t, "sqs-fifo", "relay-ce.fifo"), true, sqsMode)
	})
	t.Run("sns-fifo", func(t *testing.T) {
		sinkURL := fmt.Sprintf("sns://%s?endpoint=%s", aws.ToString(topic.TopicArn), moto.url())
		stored := relay(t, "sns", "--sink", sinkURL, "--envelope", "cloudevents")
		check(t, "sns-fifo", stored, receive(t, "sns-fifo", "relay-ce-sns.fifo"), true, always(binding.EncodingStructured))
	})
}

// relayMoto is a moto_server (a real SQS and SNS server) started for one test, as
// sink/sqssink's tests start theirs.
type relayMoto struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

func (m *relayMoto) url() string { return "http://" + m.addr }

func startRelayMoto(t *testing.T) *relayMoto {
	t.Helper()
	name := cmp.Or(os.Getenv("OUTBOX_MOTO_SERVER"), "moto_server")
	bin, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("moto_server not found (%v): this test relays to SQS and SNS on it (pip install 'moto[server]', or set OUTBOX_MOTO_SERVER)", err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", "0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so that the cleanup ends what it started, and only that
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	m := &relayMoto{cmd: cmd, done: make(chan struct{})}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-m.done
	})
	running := regexp.MustCompile(`Running on http://(127\.0\.0\.1:\d+)`)
	addr := make(chan string, 1)
	go func() {
		defer close(m.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() { // read to the end, so that its request log never fills the pipe
			if g := running.FindStringSubmatch(sc.Text()); g != nil {
				select {
				case addr <- g[1]:
				default:
				}
			}
		}
		close(addr)
		_ = cmd.Wait()
	}()
	select {
	case a, ok := <-addr:
		if !ok {
			t.Fatal("moto_server exited before it listened")
		}
		m.addr = a
	case <-time.After(60 * time.Second):
		t.Fatal("moto_server did not say where it listens within 60s")
	}
	return m
}

package sqssink_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
)

// The tests run against moto (moto_server), a real SQS and SNS server: it speaks the
// protocols of the current SDK (SQS's JSON protocol, SNS's query protocol), keeps FIFO
// queues' message groups and deduplication IDs, answers batches entry by entry, checks
// message sizes, and signs in with IAM when told to (/moto-api/reset-auth). goaws, the
// server first considered, speaks only SQS's older query protocol, which the SDK's SQS
// client no longer sends, and has no PublishBatch nor FIFO topics (docs/sinks.md says more).
//
// motoEnv names the moto_server program when it is not on PATH.
const motoEnv = "OUTBOX_MOTO_SERVER"

const (
	testRegion  = "us-east-1"
	testAccount = "123456789012" // moto's default account
)

var shared struct {
	once sync.Once
	srv  *motoServer
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.srv != nil {
		shared.srv.stop()
	}
	os.Exit(code)
}

// sharedMoto returns the moto server the package's tests share, started on first use.
// Each test makes queues and topics of its own names.
func sharedMoto(t *testing.T) *motoServer {
	t.Helper()
	bin := motoBinary(t)
	shared.once.Do(func() { shared.srv, shared.err = startMotoServer(bin) })
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.srv
}

// ownMoto starts a moto server for t alone (for a fault that would reach other tests,
// such as refusing credentials), stopped when t ends.
func ownMoto(t *testing.T) *motoServer {
	t.Helper()
	srv, err := startMotoServer(motoBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.stop)
	return srv
}

func motoBinary(t *testing.T) string {
	t.Helper()
	name := os.Getenv(motoEnv)
	if name == "" {
		name = "moto_server"
	}
	bin, err := exec.LookPath(name)
	if err != nil {
		msg := fmt.Sprintf("moto_server not found (%v): the SQS/SNS tests run against it (pip install 'moto[server]', or set %s)", err, motoEnv)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

type motoServer struct {
	addr string // host:port
	cmd  *exec.Cmd
	done chan struct{}
}

var runningOn = regexp.MustCompile(`Running on http://(127\.0\.0\.1:\d+)`)

func startMotoServer(bin string) (*motoServer, error) {
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", "0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so that stop ends what it started, and only that
	out, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &motoServer{cmd: cmd, done: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var head []string
		for sc.Scan() { // read to the end, so that its request log never fills the pipe
			if m := runningOn.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			} else if len(head) < 20 {
				head = append(head, sc.Text())
			}
		}
		select {
		case addr <- "exited: " + strings.Join(head, "\n"):
		default:
		}
		_ = cmd.Wait()
	}()
	select {
	case a := <-addr:
		if strings.HasPrefix(a, "exited: ") {
			return nil, fmt.Errorf("moto_server exited before it listened: %s", strings.TrimPrefix(a, "exited: "))
		}
		s.addr = a
	case <-time.After(60 * time.Second):
		s.stop()
		return nil, fmt.Errorf("moto_server did not say where it listens within 60s")
	}
	return s, nil
}

func (s *motoServer) stop() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}

func (s *motoServer) url() string { return "http://" + s.addr }

// enforceAuth makes the server check every request's signature against IAM (on) or
// none (off). It applies to the whole server: use it on an ownMoto.
func (s *motoServer) enforceAuth(ctx context.Context, on bool) error {
	value := "inf"
	if on {
		value = "0"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url()+"/moto-api/reset-auth", strings.NewReader(value))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("reset-auth: %s: %s", resp.Status, b)
	}
	return nil
}

// testAWSConfig is what the sink and the tests' own clients sign with: moto takes any
// credentials until told to check them.
func testAWSConfig() aws.Config {
	return aws.Config{
		Region:      testRegion,
		Credentials: credentials.NewStaticCredentialsProvider("AKIAOUTBOXTEST000000", "outbox-test-secret", ""),
	}
}

func (s *motoServer) sqsClient() *sqs.Client {
	return sqs.NewFromConfig(testAWSConfig(), func(o *sqs.Options) { o.BaseEndpoint = aws.String(s.url()) })
}

func (s *motoServer) snsClient() *sns.Client {
	return sns.NewFromConfig(testAWSConfig(), func(o *sns.Options) { o.BaseEndpoint = aws.String(s.url()) })
}

// queueURL is the URL moto gives the queue name.
func (s *motoServer) queueURL(name string) string { return s.url() + "/" + testAccount + "/" + name }

// topicARN is the ARN moto gives the topic name.
func topicARN(name string) string {
	return "arn:aws:sns:" + testRegion + ":" + testAccount + ":" + name
}

// createQueue creates the queue name (FIFO when it ends in .fifo) with attrs.
func (s *motoServer) createQueue(ctx context.Context, name string, attrs map[string]string) (string, error) {
	a := map[string]string{}
	for k, v := range attrs {
		a[k] = v
	}
	if strings.HasSuffix(name, ".fifo") {
		a["FifoQueue"] = "true"
	}
	out, err := s.sqsClient().CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name), Attributes: a})
	if err != nil {
		return "", fmt.Errorf("create queue %s: %w", name, err)
	}
	return aws.ToString(out.QueueUrl), nil
}

// received is one message read back from a queue.
type received struct {
	ID      string // the envelope's id
	Type    string
	Body    string
	Attrs   map[string]string // message attributes
	Group   string            // FIFO: MessageGroupId
	Dedup   string            // FIFO: MessageDeduplicationId
	Entity  string
	OrdKey  string
	Payload json.RawMessage
}

// queueReader reads a queue and remembers everything it read, in order: what a
// destination holds, since SQS hands a message out only once while it is in flight.
type queueReader struct {
	srv *motoServer
	url string
	// keep leaves what it read in the queue, in flight for 12 hours, rather than
	// deleting it: moto drops a FIFO message as a duplicate only while a message with
	// its deduplication ID is still in the queue (SQS remembers the ID for five
	// minutes either way). While a message of a FIFO group is in flight, the group's
	// next ones are not handed out: keep suits events of distinct groups only.
	keep bool
	mu   sync.Mutex
	all  []received
	seen map[string]bool // SQS message IDs read
}

// drain reads the queue until nothing more comes, deleting what it read unless keep.
// A queue that does not exist (deleted by the test) holds nothing more.
func (r *queueReader) drain(ctx context.Context) ([]received, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[string]bool{}
	}
	c := r.srv.sqsClient()
	visibility := int32(30)
	if r.keep {
		visibility = 12 * 60 * 60
	}
	for {
		out, err := c.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
			QueueUrl: aws.String(r.url), MaxNumberOfMessages: 10, WaitTimeSeconds: 0, VisibilityTimeout: visibility,
			MessageAttributeNames:       []string{"All"},
			MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameAll},
		})
		var missing *sqstypes.QueueDoesNotExist
		if err != nil && (strings.Contains(err.Error(), "NonExistentQueue") || errors.As(err, &missing)) {
			break
		}
		if err != nil && strings.Contains(err.Error(), "StatusCode: 403") {
			// The server checks signatures (the credentials row) and knows no key of
			// ours: it refuses every request alike, the sink's too, so the queue holds
			// what it held. Were the sink to call an event delivered meanwhile, the
			// row would find it missing here: this can only raise a false alarm.
			break
		}
		if err != nil {
			return nil, fmt.Errorf("receive from %s: %w", r.url, err)
		}
		fresh := 0
		for _, m := range out.Messages {
			if r.seen[aws.ToString(m.MessageId)] {
				continue
			}
			r.seen[aws.ToString(m.MessageId)] = true
			fresh++
			rec := received{Body: aws.ToString(m.Body), Attrs: map[string]string{},
				Group: m.Attributes["MessageGroupId"], Dedup: m.Attributes["MessageDeduplicationId"]}
			for k, v := range m.MessageAttributes {
				rec.Attrs[k] = aws.ToString(v.StringValue)
			}
			var env struct {
				ID          string          `json:"id"`
				Type        string          `json:"type"`
				EntityID    string          `json:"entity_id"`
				OrderingKey string          `json:"ordering_key"`
				Payload     json.RawMessage `json:"payload"`
			}
			if err := json.Unmarshal([]byte(rec.Body), &env); err != nil {
				return nil, fmt.Errorf("a message in %s is not an envelope: %v: %.200q", r.url, err, rec.Body)
			}
			rec.ID, rec.Type, rec.Entity, rec.OrdKey, rec.Payload = env.ID, env.Type, env.EntityID, env.OrderingKey, env.Payload
			r.all = append(r.all, rec)
			if r.keep {
				continue
			}
			if _, err := c.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(r.url), ReceiptHandle: m.ReceiptHandle}); err != nil {
				return nil, fmt.Errorf("delete from %s: %w", r.url, err)
			}
		}
		if fresh == 0 {
			break
		}
	}
	return append([]received(nil), r.all...), nil
}

// IDs is a sinktest.Setup.Held: the IDs of every message read so far, once per copy.
func (r *queueReader) IDs(ctx context.Context) ([]string, error) {
	all, err := r.drain(ctx)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(all))
	for i, m := range all {
		ids[i] = m.ID
	}
	return ids, nil
}

// holdLink is a TCP relay whose answers from the server can be held back: with hold
// on, the server gets every request and keeps what it sends, and the client hears
// nothing until hold is off. It stands for a destination that acknowledges late.
type holdLink struct {
	upstream string
	ln       net.Listener
	mu       sync.Mutex
	release  chan struct{} // closed when not holding
	conns    map[net.Conn]bool
	wg       sync.WaitGroup
}

func startHoldLink(t *testing.T, upstream string) *holdLink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &holdLink{upstream: upstream, ln: ln, release: make(chan struct{}), conns: map[net.Conn]bool{}}
	close(l.release)
	l.wg.Add(1)
	go l.serve()
	t.Cleanup(l.close)
	return l
}

func (l *holdLink) Addr() string { return l.ln.Addr().String() }

// Hold holds the server's answers back (on) or lets them, and those held, through.
func (l *holdLink) Hold(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.release:
		if on {
			l.release = make(chan struct{})
		}
	default:
		if !on {
			close(l.release)
		}
	}
}

func (l *holdLink) gate() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.release
}

func (l *holdLink) serve() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", l.upstream)
		if err != nil {
			_ = c.Close()
			continue
		}
		l.mu.Lock()
		l.conns[c], l.conns[up] = true, true
		l.mu.Unlock()
		l.wg.Add(2)
		go func() { // requests go straight through
			defer l.wg.Done()
			_, _ = io.Copy(up, c)
			_ = up.Close()
			_ = c.Close()
		}()
		go func() { // answers wait at the gate
			defer l.wg.Done()
			defer func() { _ = c.Close(); _ = up.Close() }()
			buf := make([]byte, 32<<10)
			for {
				n, err := up.Read(buf)
				if n > 0 {
					<-l.gate()
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

func (l *holdLink) close() {
	_ = l.ln.Close()
	l.Hold(false)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

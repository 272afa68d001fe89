package sqssink_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/google/uuid"

	"github.com/fitiq/outbox"
	"github.com/fitiq/outbox/sink/sinktest"
	"github.com/fitiq/outbox/sink/sqssink"
)

// TestConformance runs the sinks' fault matrix (package sinktest) against moto: a
// FIFO queue (deduplicated on the event ID, so each event must be held exactly once),
// and a standard SNS topic read back through an SQS queue subscribed to it (at least
// once). Each row has a queue or topic of its own; faults of the wire come from a
// sinktest.Proxy between the sink and the server, late answers from a holdLink, and
// hostile ones from hostileFront.
func TestConformance(t *testing.T) {
	t.Parallel()
	srv := sharedMoto(t)
	run := strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	t.Run("sqs", func(t *testing.T) {
		t.Parallel()
		h := &awsHarness{srv: srv, run: run}
		sinktest.Run(t, sinktest.Harness{Name: "sqs", Dedup: true, Setup: h.setup}, h.want(), sinktest.Parallel(), sinktest.HandlerTimeout(awsConfTimeout))
	})
	t.Run("sns", func(t *testing.T) {
		t.Parallel()
		h := &awsHarness{srv: srv, run: run, topic: true}
		sinktest.Run(t, sinktest.Harness{Name: "sns", Setup: h.setup}, h.want(), sinktest.Parallel(), sinktest.HandlerTimeout(awsConfTimeout))
	})
}

// awsConfTimeout is the rows' handler timeout: moto under the race detector on a busy
// machine answered a batch resent message by message (the too-large row) in over the
// suite's default 500 ms, which made the row's good events "retry".
const awsConfTimeout = 3 * time.Second

type awsHarness struct {
	srv   *motoServer
	run   string
	topic bool // an SNS topic; else an SQS FIFO queue
}

// want is what the sink does in each row; see the package documentation.
func (h *awsHarness) want() map[sinktest.Fault]sinktest.Verdict {
	missing := func(f sinktest.Fault) sinktest.Verdict {
		return sinktest.Verdict{Class: sinktest.Held, Reason: outbox.ReasonTargetMissing, Target: h.target(h.srv, f)}
	}
	return map[sinktest.Fault]sinktest.Verdict{
		sinktest.FaultRefused: {Class: sinktest.Held, Reason: outbox.ReasonUnreachable},
		// No answer within the handler timeout: the message may have landed.
		sinktest.FaultBlackholed: {Class: sinktest.Retry},
		// The connection drops while the sink waits for the batch's answer: the
		// messages may have landed (they had), and go again.
		sinktest.FaultRestarted:       {Class: sinktest.Retry},
		sinktest.FaultCredentials:     {Class: sinktest.Held, Reason: outbox.ReasonCredentials},
		sinktest.FaultTargetMissing:   missing(sinktest.FaultTargetMissing),
		sinktest.FaultTargetRecreated: missing(sinktest.FaultTargetRecreated),
		// The call refused for the one message is sent again message by message.
		sinktest.FaultTooLarge:        {Class: sinktest.GivenUp},
		sinktest.FaultSlowAck:         {Class: sinktest.Retry},
		sinktest.FaultCutAfterRequest: {Class: sinktest.Retry},
		sinktest.FaultHostileAnswers:  {Class: sinktest.Retry},
	}
}

// names returns the queue and topic of row f (the topic only for SNS rows).
func (h *awsHarness) names(f sinktest.Fault) (queue, topic string) {
	if h.topic {
		base := "confsns-" + h.run + "-" + string(f)
		return base + "-q", base
	}
	return "conf-" + h.run + "-" + string(f) + ".fifo", ""
}

// target is the queue URL or topic ARN the sink of row f is given.
func (h *awsHarness) target(srv *motoServer, f sinktest.Fault) string {
	queue, topic := h.names(f)
	if h.topic {
		return topicARN(topic)
	}
	return srv.queueURL(queue)
}

func (h *awsHarness) setup(t *testing.T, c sinktest.Case) sinktest.Setup {
	if c.Fault == sinktest.FaultOneRejected {
		return sinktest.Setup{NotApplicable: "SQS and SNS refuse one message of a batch only for what it holds (its size: the too-large row; " +
			"attributes and characters, which the sink sets); moto has no other refusal of one message. " +
			"Failed entries of a batch answer are mapped per message: TestBatchEntryFailures (SNS, on moto) and TestEntryError"}
	}
	srv := h.srv
	if c.Fault == sinktest.FaultCredentials {
		srv = ownMoto(t) // signatures are checked server-wide
	}
	queue, topic := h.names(c.Fault)
	d := &awsDest{srv: srv, queue: queue, topic: topic, attrs: map[string]string{}}
	d.reader = &queueReader{srv: srv, url: srv.queueURL(queue), keep: true} // the suite's events are of distinct groups
	s := sinktest.Setup{Held: d.reader.IDs}
	if c.Fault == sinktest.FaultTooLarge {
		if h.topic {
			s.MaxMessageBytes = 256 << 10 // SNS's limit, fixed
		} else {
			d.attrs["MaximumMessageSize"] = "1024" // the least a queue may take
			s.MaxMessageBytes = 1024
		}
	}
	ctx := t.Context()
	if h.topic {
		if _, err := srv.createQueue(ctx, queue, nil); err != nil { // the reader's, always there
			t.Fatal(err)
		}
	}
	if c.Fault != sinktest.FaultTargetMissing {
		if err := d.create(ctx); err != nil {
			t.Fatal(err)
		}
	}

	upstream := srv.addr
	var front *hostileFront
	switch c.Fault {
	case sinktest.FaultSlowAck:
		link := startHoldLink(t, upstream)
		link.Hold(true)
		upstream = link.Addr()
		s.Fix = func(context.Context) error { link.Hold(false); return nil }
	case sinktest.FaultHostileAnswers:
		front := startHostileFront(t, upstream)
		upstream = front.addr()
		s.Fix = func(context.Context) error { front.setHostile(false); return nil }
	case sinktest.FaultRestarted:
		// The answer to the batch (the second request, after the warm-up's) is held,
		// so that the restart comes while the sink waits for it, whatever the timing.
		front = startHoldingFront(t, upstream, 2)
		upstream = front.addr()
	}
	proxy := sinktest.StartProxy(t, upstream)
	cfg := sqssink.Config{Endpoint: "http://" + proxy.Addr()}
	if h.topic {
		cfg.TopicARN = topicARN(topic)
	} else {
		cfg.QueueURL = srv.queueURL(queue)
	}
	sink, err := sqssink.New(testAWSConfig(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Sink = sink
	set := func(m sinktest.Mode) func(context.Context) error {
		return func(context.Context) error { return proxy.Set(m) }
	}
	switch c.Fault {
	case sinktest.FaultRefused:
		s.Inject, s.Fix = set(sinktest.ModeRefuse), set(sinktest.ModePass)
	case sinktest.FaultBlackholed:
		s.Inject, s.Fix = set(sinktest.ModeBlackhole), set(sinktest.ModePass)
	case sinktest.FaultRestarted:
		s.Inject = func(context.Context) error {
			err := proxy.Set(sinktest.ModeRestart)
			front.release()
			return err
		}
	case sinktest.FaultCutAfterRequest:
		s.Inject, s.Fix = set(sinktest.ModeCut), set(sinktest.ModePass)
	case sinktest.FaultCredentials:
		if err := srv.enforceAuth(ctx, true); err != nil { // the sink's key is unknown to IAM
			t.Fatal(err)
		}
		s.Fix = func(ctx context.Context) error { return srv.enforceAuth(ctx, false) }
	case sinktest.FaultTargetMissing:
		s.Fix = d.create
	case sinktest.FaultTargetRecreated:
		s.Inject, s.Fix = d.delete, d.create
	}
	return s
}

// awsDest is one row's destination: an SQS queue, or an SNS topic with that queue
// subscribed to it (raw delivery, so that the queue holds the envelope as published).
type awsDest struct {
	srv    *motoServer
	queue  string
	topic  string // "" for an SQS row
	attrs  map[string]string
	reader *queueReader
}

func (d *awsDest) create(ctx context.Context) error {
	if d.topic == "" {
		_, err := d.srv.createQueue(ctx, d.queue, d.attrs)
		return err
	}
	c := d.srv.snsClient()
	out, err := c.CreateTopic(ctx, &sns.CreateTopicInput{Name: aws.String(d.topic)})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", d.topic, err)
	}
	_, err = c.Subscribe(ctx, &sns.SubscribeInput{
		TopicArn: out.TopicArn, Protocol: aws.String("sqs"),
		Endpoint:   aws.String("arn:aws:sqs:" + testRegion + ":" + testAccount + ":" + d.queue),
		Attributes: map[string]string{"RawMessageDelivery": "true"},
	})
	if err != nil {
		return fmt.Errorf("subscribe %s to %s: %w", d.queue, d.topic, err)
	}
	return nil
}

// delete deletes the queue (or the topic), after reading what it holds: the messages
// go with the queue, and the row must still find those it was told were delivered.
func (d *awsDest) delete(ctx context.Context) error {
	if _, err := d.reader.drain(ctx); err != nil {
		return err
	}
	if d.topic == "" {
		_, err := d.srv.sqsClient().DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(d.srv.queueURL(d.queue))})
		return err
	}
	_, err := d.srv.snsClient().DeleteTopic(ctx, &sns.DeleteTopicInput{TopicArn: aws.String(topicARN(d.topic))})
	return err
}

// hostileFront is an HTTP server in front of moto: it passes each request on (so the
// server may keep the message) and, while hostile, throws the answer away and answers
// with one of hostileAnswers in turn.
//
// With holdFrom set instead, it passes answers on, but holds back those to the
// holdFrom-th request and later until release: the server has taken the request,
// the client has heard nothing.
type hostileFront struct {
	srv      *httptest.Server
	upstream string
	mu       sync.Mutex
	hostile  bool
	n        int
	holdFrom int           // 0: hold nothing
	requests int           // requests seen
	released chan struct{} // closed by release
}

func startHostileFront(t *testing.T, upstream string) *hostileFront {
	return startFront(t, &hostileFront{upstream: upstream, hostile: true})
}

// startHoldingFront starts a front that holds the answers to the holdFrom-th request
// and later ones until release.
func startHoldingFront(t *testing.T, upstream string, holdFrom int) *hostileFront {
	return startFront(t, &hostileFront{upstream: upstream, holdFrom: holdFrom, released: make(chan struct{})})
}

func startFront(t *testing.T, f *hostileFront) *hostileFront {
	f.srv = httptest.NewServer(f)
	t.Cleanup(func() {
		f.release()
		f.srv.Close()
	})
	return f
}

func (f *hostileFront) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.released != nil {
		select {
		case <-f.released:
		default:
			close(f.released)
		}
	}
}

func (f *hostileFront) addr() string { return f.srv.Listener.Addr().String() }

func (f *hostileFront) setHostile(on bool) {
	f.mu.Lock()
	f.hostile = on
	f.mu.Unlock()
}

func (f *hostileFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := readAll(r)
	if err != nil {
		return
	}
	f.serveBody(w, r, body)
}

func readAll(r *http.Request) ([]byte, error) { return io.ReadAll(r.Body) }

// serveBody passes the request, whose body was read, to the server.
func (f *hostileFront) serveBody(w http.ResponseWriter, r *http.Request, body []byte) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, "http://"+f.upstream+r.URL.RequestURI(), strings.NewReader(string(body)))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	f.mu.Lock()
	hostile, n := f.hostile, f.n
	if hostile {
		f.n++
	}
	f.requests++
	hold := f.holdFrom > 0 && f.requests >= f.holdFrom
	f.mu.Unlock()
	if hostile {
		hostileAnswers[n%len(hostileAnswers)](w)
		return
	}
	if hold {
		select {
		case <-f.released:
		case <-r.Context().Done(): // the client went away: the answer is lost
			return
		}
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// hostileAnswers are answers no SQS or SNS server gives: NUL bytes, invalid UTF-8,
// megabytes of text, something that is not HTTP, error codes made of junk.
var hostileAnswers = []func(w http.ResponseWriter){
	func(w http.ResponseWriter) { // taken, then megabytes of junk where the answer belongs
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, hostileText(4<<20))
	},
	func(w http.ResponseWriter) { // not HTTP at all
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_, _ = buf.WriteString("\x00\xffNOT HTTP\r\n\r\n")
			_ = buf.Flush()
			_ = conn.Close()
		}
	},
	func(w http.ResponseWriter) {
		http.Error(w, "bad\x00gateway\x00", http.StatusBadGateway)
	},
	func(w http.ResponseWriter) { // an error in both protocols' forms, made of junk
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		w.Header().Set("X-Amzn-Query-Error", "\xffJunk\x00;Sender")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = fmt.Fprintf(w, `{"__type":"com.amazonaws.sqs#Junk\u0000","message":%q}`, hostileText(64<<10))
	},
	func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "text/xml")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = fmt.Fprintf(w, "<ErrorResponse><Error><Type>Sender</Type><Code>\xff\xfeJunk</Code><Message>%s</Message></Error></ErrorResponse>", hostileText(1<<20))
	},
}

// hostileText is n bytes of NUL, invalid UTF-8, control characters and markup.
func hostileText(n int) string {
	const unit = "\x00\xff\xfe\x1b[31m<script>alert(1)</script>\xc3\x28"
	return strings.Repeat(unit, n/len(unit)+1)[:n]
}

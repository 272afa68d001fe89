package fitiq

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// ClientConfig points a Client at a remote API.
type ClientConfig struct {
	// BaseURL is the API's root, such as "https://api.fitiq.example". Required.
	BaseURL string
	// Token is the user's bearer token.
	Token string
	// Timeout bounds one request, answer included. Defaults to 10s.
	Timeout time.Duration
	// HTTPClient sends the requests. Defaults to a client with Timeout.
	HTTPClient *http.Client
	// Propagator writes the trace of a request's context into its headers, so that the
	// backend's span joins it. Defaults to otel.GetTextMapPropagator().
	Propagator propagation.TextMapPropagator
}

// Client calls the remote API for one user's token.
type Client struct {
	base  *url.URL
	token string
	http  *http.Client
	prop  propagation.TextMapPropagator
}

// maxAnswerBytes bounds what the client reads of an answer.
const maxAnswerBytes = 4 << 20

// NewClient returns a client for cfg, or an error naming the field that cannot work.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.BaseURL == "" {
		return nil, fieldErr("ClientConfig.BaseURL", "must not be empty")
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fieldErr("ClientConfig.BaseURL", "%q is not an http(s) URL", cfg.BaseURL)
	}
	if cfg.Timeout < 0 {
		return nil, fieldErr("ClientConfig.Timeout", "must not be negative, got %s", cfg.Timeout)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: cmp.Or(cfg.Timeout, 10*time.Second)}
	}
	prop := cfg.Propagator
	if prop == nil {
		prop = otel.GetTextMapPropagator()
	}
	return &Client{base: u, token: cfg.Token, http: hc, prop: prop}, nil
}

// EntityPath is the API path of kind k for userID, with id appended when not empty.
func EntityPath(userID string, k Kind, id string) string {
	p := "/v1/users/" + url.PathEscape(userID) + "/" + string(k)
	if id != "" {
		p += "/" + url.PathEscape(id)
	}
	return p
}

type idempotencyKey struct{}

// WithIdempotencyKey returns ctx carrying key, which the client sends as the
// Idempotency-Key of its writes: the sync handlers send the outbox event's ID, so that
// the backend applies each event once.
func WithIdempotencyKey(ctx context.Context, key string) context.Context {
	return context.WithValue(ctx, idempotencyKey{}, key)
}

// Create sends a new entity. A 409 answer (it exists already) is an error matching
// ErrConflict; Get then returns the stored record.
func (c *Client) Create(ctx context.Context, userID string, e Entity) (RemoteRecord, error) {
	var rec RemoteRecord
	err := c.do(ctx, http.MethodPost, EntityPath(userID, e.Kind(), ""), nil, e, &rec)
	return rec, err
}

// Update sends a new version of an entity the backend holds already.
func (c *Client) Update(ctx context.Context, userID string, e Entity) (RemoteRecord, error) {
	var rec RemoteRecord
	err := c.do(ctx, http.MethodPut, EntityPath(userID, e.Kind(), e.Base().ID), nil, e, &rec)
	return rec, err
}

// Get returns the backend's record of the entity with the client's ID id; an unknown
// ID is an error matching ErrNotFound.
func (c *Client) Get(ctx context.Context, userID string, k Kind, id string) (RemoteRecord, error) {
	var rec RemoteRecord
	err := c.do(ctx, http.MethodGet, EntityPath(userID, k, id), nil, nil, &rec)
	return rec, err
}

// History returns one page of userID's entities of kind k matching q, most recent first.
func (c *Client) History(ctx context.Context, userID string, k Kind, q HistoryQuery) (HistoryPage, error) {
	var page HistoryPage
	err := c.do(ctx, http.MethodGet, EntityPath(userID, k, ""), q.Values(), nil, &page)
	return page, err
}

// do sends one request and decodes a 2xx answer into out. Any other answer is an
// *APIError; a failure to connect or read is returned as is (wrapped).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any) error {
	// path is escaped (a user ID may hold any character); keep it so in the URL.
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	unescaped, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return fmt.Errorf("fitiq: %s %s: %w", method, path, err)
	}
	u.Path = unescaped
	if len(query) > 0 {
		u.RawQuery = query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("fitiq: encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return fmt.Errorf("fitiq: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "fitiq/"+Version)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	c.prop.Inject(ctx, propagation.HeaderCarrier(req.Header))
	if key, ok := ctx.Value(idempotencyKey{}).(string); ok && method != http.MethodGet {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("fitiq: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	if err != nil {
		return fmt.Errorf("fitiq: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		apiErr := &APIError{Method: method, Path: path, Status: resp.StatusCode}
		var eb ErrorBody
		if json.Unmarshal(data, &eb) == nil {
			apiErr.Message = eb.Error
		}
		apiErr.RetryAfter, _ = ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return apiErr
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("fitiq: %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// Package dashboard is the outbox's operator dashboard as an http.Handler: an overview
// of the store (counts, health, throughput), a filterable list of events, each event in
// full, and the operator's actions (retry, discard) behind a confirmation. Mount it in
// a service of your own, or run it with `outbox serve`.
//
// Pages are rendered on the server with html/template, so that no event content can
// become markup; the few lines of JavaScript (the overview's live refresh) and the
// stylesheet are embedded, and the pages load nothing from the network.
//
// Access: with Config.Token set, every request must carry it; without, only loopback
// clients are served, and only under a loopback name (the Host header localhost,
// 127.0.0.1 or [::1]), so that no other site can reach it by DNS rebinding. Actions are POST requests that must come from the dashboard's own
// pages (a per-dashboard form token, and the browser's cross-origin headers checked by
// net/http.CrossOriginProtection), and are refused altogether in read-only mode.
package dashboard

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fitiq/outbox"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Handler serves the dashboard. Build it with New.
type Handler struct {
	cfg    Config
	store  outbox.Store
	log    *slog.Logger
	csrf   string // the form token every action must carry
	pages  map[string]*template.Template
	mux    *http.ServeMux
	origin *http.CrossOriginProtection
	cache  overviewCache
	top    atomic.Int64 // the largest Seq last seen, where the next search for it starts

	completions completionsCache
	counts      countCache
	scan        scanLimits
}

// New returns the dashboard for cfg.Store. It fails when cfg holds a value that cannot
// work, naming the field.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	h := &Handler{
		cfg:    cfg,
		store:  cfg.Store,
		log:    cfg.Logger.With("component", "outbox.dashboard"),
		origin: http.NewCrossOriginProtection(),
		scan:   defaultScanLimits,
	}
	// The form token is derived from the access token when there is one, so that every
	// replica behind a load balancer accepts the others' forms; otherwise it is random
	// per process.
	key := []byte(cfg.Token)
	if cfg.Token == "" {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("outbox/dashboard: form token: %w", err)
		}
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("outbox dashboard form token"))
	h.csrf = hex.EncodeToString(mac.Sum(nil))

	var err error
	if h.pages, err = parseTemplates(cfg.Prefix); err != nil {
		return nil, err
	}
	static, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", h.serveOverview)
	mux.HandleFunc("GET /overview/live", h.serveOverviewLive)
	mux.HandleFunc("GET /api/overview", h.serveOverviewJSON)
	mux.HandleFunc("GET /events", h.serveEvents)
	mux.HandleFunc("GET /events/{id}", h.serveEvent)
	mux.HandleFunc("POST /actions/{action}", h.serveAction)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, "no such page")
	})
	h.mux = mux
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	// Nothing but our own embedded assets may load or run, whatever an event carries.
	hdr.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cache-Control", "no-store")
	if h.cfg.Token == "" && !loopbackHost(r.Host) {
		// A page of another site whose name was pointed at this machine (DNS rebinding)
		// would otherwise be same-origin with the dashboard, read its form token and act.
		// No page is rendered: the error page is plain text.
		h.log.Warn("request refused: not a loopback host name", "host", r.Host, "remote", r.RemoteAddr, "path", r.URL.Path)
		http.Error(w, fmt.Sprintf("misdirected request: this dashboard has no token, so it answers only to a loopback host name "+
			"(localhost, 127.0.0.1 or [::1], with any port), not to %q. Open it at http://127.0.0.1:PORT/, "+
			"or give it a token to serve it under another name.", r.Host), http.StatusMisdirectedRequest)
		return
	}
	who, status, msg := h.authenticate(r)
	if status != 0 {
		if status == http.StatusUnauthorized {
			hdr.Set("WWW-Authenticate", `Basic realm="outbox dashboard", charset="UTF-8"`)
		}
		h.fail(w, r, status, msg)
		return
	}
	h.mux.ServeHTTP(w, r.WithContext(withWho(r.Context(), who)))
}

// authenticate returns who is asking, or the status and message of a refusal.
func (h *Handler) authenticate(r *http.Request) (who string, status int, msg string) {
	if h.cfg.Token == "" {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return "", http.StatusForbidden, "this dashboard has no token, so it serves loopback clients only"
		}
		return "local", 0, ""
	}
	if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && h.tokenMatches(bearer) {
		return "token", 0, ""
	}
	if user, pass, ok := r.BasicAuth(); ok && h.tokenMatches(pass) {
		if user == "" {
			user = "token"
		}
		return user, 0, ""
	}
	return "", http.StatusUnauthorized, "a token is required"
}

// loopbackHost reports whether host, a request's Host header, names the loopback
// interface: localhost, or a loopback IP address (127.0.0.0/8, ::1), with or without
// a port.
func loopbackHost(host string) bool {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	} else if strings.HasPrefix(name, "[") && strings.HasSuffix(name, "]") {
		name = name[1 : len(name)-1]
	}
	if strings.EqualFold(name, "localhost") {
		return true
	}
	ip := net.ParseIP(name)
	return ip != nil && ip.IsLoopback()
}

func (h *Handler) tokenMatches(got string) bool {
	return subtle.ConstantTimeCompare([]byte(got), []byte(h.cfg.Token)) == 1
}

// checkAction refuses an action that does not come from the dashboard's own form, or
// that a read-only dashboard must not take.
func (h *Handler) checkAction(r *http.Request) (status int, msg string) {
	if h.cfg.ReadOnly {
		return http.StatusForbidden, "this dashboard is read-only"
	}
	if err := h.origin.Check(r); err != nil {
		return http.StatusForbidden, "cross-origin request refused"
	}
	if !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(h.csrf)) {
		return http.StatusForbidden, "the form token is missing or wrong: reload the page and try again"
	}
	return 0, ""
}

// page is what every template receives.
type page struct {
	Title    string
	Nav      string // which tab is current
	CSRF     string
	ReadOnly bool
	Refresh  int // the overview's refresh interval, in milliseconds
	Now      time.Time
	Error    string
	Notice   string
	Data     any
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	p.CSRF, p.ReadOnly, p.Now = h.csrf, h.cfg.ReadOnly, h.cfg.Clock.Now()
	p.Refresh = int(h.cfg.RefreshInterval / time.Millisecond)
	var b strings.Builder
	if err := h.pages[name].ExecuteTemplate(&b, "layout", p); err != nil {
		h.log.Error("render page", "page", name, "err", err)
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// fail renders an error page (or a line of text, for the JSON endpoint).
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if strings.HasPrefix(r.URL.Path, "/api/") || h.pages == nil {
		http.Error(w, msg, status)
		return
	}
	h.render(w, r, status, "error", page{Title: http.StatusText(status), Error: msg})
}

// storeError reports a store failure: not found for ErrNotFound, bad request for
// ErrInvalid, else an internal error that is logged.
func (h *Handler) storeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, outbox.ErrNotFound):
		h.fail(w, r, http.StatusNotFound, err.Error())
	case errors.Is(err, outbox.ErrInvalid):
		h.fail(w, r, http.StatusBadRequest, err.Error())
	case r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
	default:
		h.log.Error("store", "path", r.URL.Path, "err", err)
		h.fail(w, r, http.StatusInternalServerError, "the store failed: "+err.Error())
	}
}

package dashboard

import (
	"fmt"
	"html/template"
	"net/url"
	"time"

	"github.com/fitiq/outbox"
)

// parseTemplates builds one template set per page: the layout and the page's file.
func parseTemplates(prefix string) (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"url": func(path string) string { return prefix + path },
		"ts": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05.000")
		},
		"ago": func(now, t time.Time) string {
			if t.IsZero() {
				return ""
			}
			d := now.Sub(t)
			if d < 0 {
				return "in " + roundDuration(-d)
			}
			return roundDuration(d) + " ago"
		},
		"dur": roundDuration,
		"pct": func(f float64) string { return fmt.Sprintf("%.1f%%", f*100) },
		// waiting is what the "pending" health rule counts.
		"waiting": func(s outbox.Stats) int { return s.Pending + s.Failed - s.PausedWaiting() },
		"short": func(s string, n int) string {
			if r := []rune(s); len(r) > n {
				return string(r[:n]) + "…"
			}
			return s
		},
		"statusOf": statusOf,
		"typeLink": func(typ string) template.URL { return template.URL(url.Values{"type": {typ}}.Encode()) },
	}
	pages := map[string]*template.Template{}
	for _, name := range []string{"overview", "events", "event", "confirm", "error"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("outbox/dashboard: parse templates: %w", err)
		}
		pages[name] = t
	}
	return pages, nil
}

// roundDuration shows a duration to a precision that suits its size.
func roundDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}

type statusLabel struct{ Text, Class string }

// statusOf names where an event stands, telling retrying from given up and stuck from
// in flight.
func statusOf(e outbox.Event, now time.Time) statusLabel {
	switch {
	case e.Status == outbox.StatusCompleted:
		return statusLabel{"completed", "ok"}
	case e.GivenUp():
		return statusLabel{"given up", "fail"}
	case e.Status == outbox.StatusFailed:
		return statusLabel{"retrying", "warn"}
	case isStuck(e, now):
		return statusLabel{"stuck", "fail"}
	case e.Status == outbox.StatusProcessing:
		return statusLabel{"processing", "info"}
	}
	return statusLabel{string(e.Status), "info"}
}

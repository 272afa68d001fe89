package dashboard

import (
	"fmt"
	"html/template"
	"net/url"
	"regexp"
	"strconv"
	"strings"
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
		// typeLink is the list of typ's events, narrowed by more parameters in pairs:
		// typeLink "order.created" "status" "pending".
		"typeLink": func(typ string, kv ...string) template.URL {
			v := url.Values{"type": {typ}}
			for i := 0; i+1 < len(kv); i += 2 {
				v.Set(kv[i], kv[i+1])
			}
			return template.URL(v.Encode())
		},
		"show":       visible,
		"plain":      plain,
		"alertLinks": alertLinks,
		"alertText":  alertText,
		"count":      thousands,
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

// thousands writes n with a comma between groups of three digits.
func thousands(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteString(",")
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// link is a link of the overview to a list.
type link struct {
	Text string
	Href string // from the dashboard's root, without the prefix
}

// alertLinks names the lists an alert is about.
func alertLinks(rule string) []link {
	switch rule {
	case outbox.RuleStuck:
		return []link{{"the stuck events", "/events?stuck=1"}}
	case outbox.RuleStale:
		return []link{{"the stale events", "/events?stale=1"}}
	case outbox.RuleOldestDue:
		return []link{{"the stale events, oldest first", "/events?order=oldest&stale=1"}}
	case outbox.RuleFailureRate:
		return []link{{"the retrying events", "/events?retrying=1"}, {"the given-up events", "/events?given_up=1"}}
	case outbox.RuleGivenUp:
		return []link{{"the given-up events", "/events?given_up=1"}}
	case outbox.RulePending:
		return []link{{"the pending events", "/events?status=pending"}, {"the retrying events", "/events?retrying=1"}}
	}
	return nil
}

// cliHint is a pointer to a CLI command in an alert's message: on the dashboard the
// alert links to its list instead.
var cliHint = regexp.MustCompile(`;? ?see '?outbox [^')]*'?`)

// alertText is an alert's message without its pointer to the CLI.
func alertText(msg string) string { return cliHint.ReplaceAllString(msg, "") }

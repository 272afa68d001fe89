package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// table writes aligned columns for people.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = strings.NewReplacer("\t", " ", "\n", " ").Replace(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() { _ = t.tw.Flush() }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func fmtAge(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return formatDuration(d.Round(time.Second))
}

// truncate cuts s to n runes, marking the cut.
func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// progress reports an operation over many events on stderr: a bar redrawn in place on
// a terminal, a line per tenth otherwise (logs, CI).
type progress struct {
	w      io.Writer
	label  string
	total  int
	done   int
	tty    bool
	shown  int // last tenth printed (non-terminal); -1 before the first line
	active bool
}

// newProgress returns a progress report, shown only when the operation spans more than
// one batch: a small retry prints just its result.
func newProgress(env *Env, label string, total, batch int) *progress {
	p := &progress{w: env.Stderr, label: label, total: total, tty: env.StderrIsTerminal, active: total > batch, shown: -1}
	p.draw()
	return p
}

func (p *progress) add(n int) {
	p.done += n
	p.draw()
}

func (p *progress) draw() {
	if !p.active {
		return
	}
	total := max(p.total, p.done, 1)
	pct := p.done * 100 / total
	if p.tty {
		const width = 30
		fill := p.done * width / total
		fmt.Fprintf(p.w, "\r%s [%s%s] %3d%% %d/%d", p.label, strings.Repeat("=", fill), strings.Repeat(" ", width-fill), pct, p.done, total)
		return
	}
	if tenth := pct / 10; tenth > p.shown {
		p.shown = tenth
		fmt.Fprintf(p.w, "%s: %d/%d (%d%%)\n", p.label, p.done, total, pct)
	}
}

// finish ends the bar's line.
func (p *progress) finish() {
	if p.active && p.tty {
		fmt.Fprintln(p.w)
	}
}

package outbox_test

// Tests that hold the documentation to the code: the configuration page's defaults to
// the exported constants, every link to a file of the repository, and every Go snippet
// to an Example function that compiles and runs.

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fitiq/outbox"
)

// docPages returns README.md and every page of docs/, as paths from the repository root.
func docPages(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob(filepath.Join("docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatal("no page in docs/")
	}
	return append([]string{"README.md"}, pages...)
}

// configDefaults is what the configuration page must document: each field of
// outbox.Config (nested fields as "Retry.Delays") that has an exported default.
var configDefaults = map[string]any{
	"BatchSize":             outbox.DefaultBatchSize,
	"PollInterval":          outbox.DefaultPollInterval,
	"MaxConcurrent":         outbox.DefaultMaxConcurrent,
	"BatchesInFlight":       outbox.DefaultBatchesInFlight,
	"LeaseDuration":         outbox.DefaultLeaseDuration,
	"HandlerTimeout":        outbox.DefaultHandlerTimeout,
	"CleanupInterval":       outbox.DefaultCleanupInterval,
	"Retention":             outbox.DefaultRetention,
	"StaleAfter":            outbox.DefaultStaleAfter,
	"Retry.Delays":          outbox.DefaultRetryDelays,
	"Retry.MaxAttempts":     outbox.DefaultMaxAttempts,
	"Retry.Jitter":          outbox.DefaultJitter,
	"Health.MaxStale":       outbox.DefaultMaxStale,
	"Health.MaxFailureRate": outbox.DefaultMaxFailureRate,
	"Health.MaxPending":     outbox.DefaultMaxPending,
	"Health.MaxStuck":       outbox.DefaultMaxStuck,
	"Health.MaxGivenUp":     outbox.DefaultMaxGivenUp,
	"Health.MaxOldestDue":   outbox.DefaultMaxOldestDue,
	"Health.Window":         outbox.DefaultHealthWindow,
	"Breaker.Threshold":     outbox.DefaultBreakerThreshold,
	"Breaker.Cooldown":      outbox.DefaultBreakerCooldown,
	"Breaker.MaxCooldown":   outbox.DefaultBreakerMaxCooldown,
}

func TestDocsConfigurationTableMatchesDefaults(t *testing.T) {
	rows := configTable(t, filepath.Join("docs", "configuration.md"), "outbox.Config")

	// Every field of Config has a row, and every row names a field.
	fields := configFields(reflect.TypeFor[outbox.Config](), "")
	for _, f := range fields {
		if _, ok := rows[f]; !ok {
			t.Errorf("field %s of outbox.Config has no row in the table", f)
		}
	}
	for f := range rows {
		if !slices.Contains(fields, f) {
			t.Errorf("the table has a row for %s, which is not a field of outbox.Config", f)
		}
	}

	for field, want := range configDefaults {
		cell, ok := rows[field]
		if !ok {
			continue // reported above
		}
		got, err := parseDefault(cell, reflect.TypeOf(want))
		if err != nil {
			t.Errorf("%s: the documented default %q: %v", field, cell, err)
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: documented default %v, the constant is %v", field, got, want)
		}
	}
}

// TestDocsDefaultsAreWhatNewProcessorUses checks the other half of the chain: the
// constants the page is compared with are the values a zero Config ends up with.
func TestDocsDefaultsAreWhatNewProcessorUses(t *testing.T) {
	p, err := outbox.NewProcessor(struct{ outbox.Store }{}, outbox.Handlers{}, outbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := reflect.ValueOf(p.Config())
	for field, want := range configDefaults {
		v := cfg
		for name := range strings.SplitSeq(field, ".") {
			v = v.FieldByName(name)
		}
		if got := v.Interface(); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: a zero Config gets %v, the exported default is %v", field, got, want)
		}
	}
}

// configFields lists the exported fields of t, descending into the struct fields
// that are configuration groups (Retry, Health) but not into other types.
func configFields(t reflect.Type, prefix string) []string {
	var out []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type.PkgPath() == t.PkgPath() {
			out = append(out, configFields(f.Type, prefix+f.Name+".")...)
			continue
		}
		out = append(out, prefix+f.Name)
	}
	return out
}

// configTable returns the first table after the heading that mentions name, as field →
// default cell (backticks removed).
func configTable(t *testing.T, page, name string) map[string]string {
	t.Helper()
	f, err := os.Open(page)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string]string{}
	inSection, inTable := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "#"):
			if inTable {
				return rows
			}
			inSection = strings.Contains(line, "`"+name+"`")
		case inSection && strings.HasPrefix(line, "|"):
			inTable = true
			cells := strings.Split(strings.Trim(line, "|"), "|")
			if len(cells) < 3 {
				t.Fatalf("%s: table row %q has fewer than three cells", page, line)
			}
			field := strings.Trim(strings.TrimSpace(cells[0]), "`")
			if field == "field" || strings.HasPrefix(field, "---") {
				continue // header and separator
			}
			rows[field] = strings.Trim(strings.TrimSpace(cells[1]), "`")
		case inTable:
			return rows
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatalf("%s: no table under a heading naming `%s`", page, name)
	}
	return rows
}

var days = regexp.MustCompile(`^(\d+)d$`)

// parseDuration is time.ParseDuration that also reads whole days ("7d").
func parseDuration(s string) (time.Duration, error) {
	if m := days.FindStringSubmatch(s); m != nil {
		n, err := strconv.Atoi(m[1])
		return time.Duration(n) * 24 * time.Hour, err
	}
	return time.ParseDuration(s)
}

// parseDefault reads a documented default as a value of type want.
func parseDefault(cell string, want reflect.Type) (any, error) {
	switch want {
	case reflect.TypeFor[time.Duration]():
		return parseDuration(cell)
	case reflect.TypeFor[[]time.Duration]():
		var ds []time.Duration
		for s := range strings.SplitSeq(cell, ",") {
			d, err := parseDuration(strings.TrimSpace(s))
			if err != nil {
				return nil, err
			}
			ds = append(ds, d)
		}
		return ds, nil
	case reflect.TypeFor[int]():
		return strconv.Atoi(cell)
	case reflect.TypeFor[float64]():
		return strconv.ParseFloat(cell, 64)
	}
	return nil, fmt.Errorf("no parser for %s", want)
}

var (
	inlineLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	autoLink   = regexp.MustCompile(`<([a-z][a-z0-9+.-]*:[^>\s]+)>`)
	codeSpan   = regexp.MustCompile("`[^`]*`")
)

// pageLinks returns the link targets of a markdown page, outside code blocks and spans.
func pageLinks(t *testing.T, page string) []string {
	t.Helper()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	fenced := false
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		line = codeSpan.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
			links = append(links, m[1])
		}
		for _, m := range autoLink.FindAllStringSubmatch(line, -1) {
			links = append(links, m[1])
		}
	}
	return links
}

func TestDocsHaveNoLinkOutsideTheRepository(t *testing.T) {
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	scheme := regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	for _, page := range docPages(t) {
		for _, link := range pageLinks(t, page) {
			if scheme.MatchString(link) || strings.HasPrefix(link, "//") {
				t.Errorf("%s links outside the repository: %s", page, link)
				continue
			}
			target, fragment, _ := strings.Cut(link, "#")
			if target == "" {
				target = filepath.Base(page)
			}
			if strings.HasPrefix(target, "/") {
				t.Errorf("%s: link %s is absolute; make it relative to the page", page, link)
				continue
			}
			abs := filepath.Join(root, filepath.Dir(page), filepath.FromSlash(target))
			if rel, err := filepath.Rel(root, abs); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				t.Errorf("%s links outside the repository: %s", page, link)
				continue
			}
			if _, err := os.Stat(abs); err != nil {
				t.Errorf("%s links to %s, which does not exist", page, link)
				continue
			}
			if fragment != "" && strings.HasSuffix(abs, ".md") && !slices.Contains(headingAnchors(t, abs), fragment) {
				t.Errorf("%s links to %s, but that page has no heading with the anchor #%s", page, link, fragment)
			}
		}
	}
}

var notInAnchor = regexp.MustCompile(`[^\p{L}\p{N}_ -]`)

// headingAnchors returns the anchors a markdown renderer gives the headings of a page:
// lower case, punctuation dropped, spaces turned into hyphens.
func headingAnchors(t *testing.T, page string) []string {
	t.Helper()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	var anchors []string
	fenced := false
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(line, "#") {
			continue
		}
		title := strings.TrimSpace(strings.TrimLeft(line, "#"))
		anchor := notInAnchor.ReplaceAllString(strings.ToLower(title), "")
		anchors = append(anchors, strings.ReplaceAll(anchor, " ", "-"))
	}
	return anchors
}

// TestDocsGoSnippetsComeFromExamples checks that every line of every Go block in the
// README and docs/ appears in an Example file, so that the snippets are code that
// compiles and runs (trimmed, perhaps, but not rewritten).
func TestDocsGoSnippetsComeFromExamples(t *testing.T) {
	known := map[string]bool{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bench") {
			return filepath.SkipDir
		}
		name := d.Name()
		if name == "example_test.go" || (strings.HasPrefix(name, "example_") && strings.HasSuffix(name, "_test.go")) {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for line := range strings.Lines(string(b)) {
				known[strings.TrimSpace(line)] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, page := range docPages(t) {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		inGo := false
		for i, line := range strings.Split(string(b), "\n") {
			trimmed := strings.TrimSpace(line)
			switch {
			case trimmed == "```go":
				inGo = true
			case inGo && trimmed == "```":
				inGo = false
			case inGo && trimmed != "" && !known[trimmed]:
				t.Errorf("%s:%d: this line of a Go snippet is in no Example file: %s", page, i+1, trimmed)
			}
		}
	}
}

package outbox_test

// Tests that hold the documentation to the code: the configuration page's defaults to
// the exported constants, every link to a file of the repository, every Go snippet to
// an Example function or tested program that compiles and runs, and the README's
// program to running as pasted. (The sample outputs of the outbox command are held to
// the command in cmd/outbox/internal/cli.)

import (
	"bufio"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
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

// snippetSources reads the files a Go snippet of the docs may be taken from: the
// Example files (example_test.go, example_*_test.go) and the tested programs under
// examples/quickstart, as path → content.
func snippetSources(t *testing.T) map[string]string {
	t.Helper()
	sources := map[string]string{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bench") {
			return filepath.SkipDir
		}
		name := d.Name()
		example := name == "example_test.go" || (strings.HasPrefix(name, "example_") && strings.HasSuffix(name, "_test.go"))
		program := strings.HasPrefix(filepath.ToSlash(path), "examples/quickstart/") && strings.HasSuffix(name, ".go")
		if example || program {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sources[filepath.ToSlash(path)] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sources
}

// goSnippet is a Go block of a page.
type goSnippet struct {
	line   int    // of its first line, from 1
	text   string // its body
	around string // the paragraphs just before and just after it, which may name its source
}

func goSnippets(t *testing.T, page string) []goSnippet {
	t.Helper()
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var out []goSnippet
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```go" {
			continue
		}
		j := i + 1
		for j < len(lines) && strings.TrimSpace(lines[j]) != "```" {
			j++
		}
		before := i - 1
		for before > 0 && strings.TrimSpace(lines[before-1]) != "" {
			before--
		}
		if before < 0 {
			before = 0
		}
		after := min(j+1, len(lines))
		for after < len(lines) && strings.TrimSpace(lines[after]) != "" {
			after++
		}
		out = append(out, goSnippet{
			line:   i + 2,
			text:   strings.Join(lines[i+1:min(j, len(lines))], "\n") + "\n",
			around: strings.Join(lines[before:i], "\n") + "\n" + strings.Join(lines[min(j+1, len(lines)):after], "\n"),
		})
		i = j
	}
	return out
}

// trimmedLines is s line by line, without indentation: a snippet may be indented
// differently from its source, but not otherwise changed.
func trimmedLines(s string) []string {
	var out []string
	for line := range strings.Lines(s) {
		out = append(out, strings.TrimSpace(line))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// containsRun reports whether want appears in have as consecutive lines.
func containsRun(have, want []string) bool {
	for i := 0; i+len(want) <= len(have); i++ {
		if slices.Equal(have[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

// goFile matches a snippet that is a whole file: it has a package clause.
var goFile = regexp.MustCompile(`(?m)^package \w+$`)

var goFileMention = regexp.MustCompile("[A-Za-z0-9_./-]+\\.go\\b")

// TestDocsGoSnippetsAreTheirSources holds every Go block of the README and docs/ to
// code that compiles and runs: each is a run of consecutive lines of an Example file or
// of a tested program (examples/quickstart), unchanged but for indentation, and of the
// file its page names when it names one; it is whole Go (statements or a file) and
// checks each error it assigns. A block that is a whole program is the whole file.
func TestDocsGoSnippetsAreTheirSources(t *testing.T) {
	t.Parallel()
	sources := snippetSources(t)
	for _, page := range docPages(t) {
		for _, sn := range goSnippets(t, page) {
			where := fmt.Sprintf("%s:%d", page, sn.line)
			want := trimmedLines(sn.text)
			var in []string
			for path, src := range sources {
				if containsRun(trimmedLines(src), want) {
					in = append(in, path)
				}
			}
			slices.Sort(in)
			if len(in) == 0 {
				t.Errorf("%s: this Go snippet is not a run of lines of any Example file or tested program:\n%s", where, sn.text)
				continue
			}
			for _, named := range goFileMention.FindAllString(sn.around, -1) {
				if _, ok := sources[named]; ok && !slices.Contains(in, named) {
					t.Errorf("%s: the page names %s as the snippet's source, but the snippet is not in it (it is in %v)", where, named, in)
				}
			}
			if goFile.MatchString(sn.text) {
				whole := false
				for _, path := range in {
					whole = whole || strings.TrimSpace(sources[path]) == strings.TrimSpace(sn.text)
				}
				if !whole {
					t.Errorf("%s: a whole program, but not the whole of %v", where, in)
				}
			}
			for _, problem := range snippetProblems(sn.text) {
				t.Errorf("%s: %s", where, problem)
			}
		}
	}
}

// snippetProblems parses a snippet (a file, or statements) and lists what keeps it
// from being code that runs as shown: a syntax error (a snippet cut mid-statement), an
// error assigned and not looked at by the next statement, a result discarded with _
// from a call that returns several (an error, as a rule).
func snippetProblems(text string) []string {
	src, offset := text, 0
	if !goFile.MatchString(text) {
		src, offset = "package p\n\nfunc _() {\n"+text+"\n}\n", 3
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "snippet.go", src, parser.SkipObjectResolution)
	if err != nil {
		return []string{fmt.Sprintf("not whole Go (cut mid-statement?): %v", err)}
	}
	var problems []string
	line := func(n ast.Node) int { return fset.Position(n.Pos()).Line - offset }
	mentionsErr := func(n ast.Node) bool {
		found := false
		ast.Inspect(n, func(n ast.Node) bool {
			if id, ok := n.(*ast.Ident); ok && id.Name == "err" {
				found = true
			}
			return !found
		})
		return found
	}
	ast.Inspect(f, func(n ast.Node) bool {
		var list []ast.Stmt
		switch b := n.(type) {
		case *ast.BlockStmt:
			list = b.List
		case *ast.CaseClause:
			list = b.Body
		case *ast.CommClause:
			list = b.Body
		default:
			return true
		}
		for i, st := range list {
			as, ok := st.(*ast.AssignStmt)
			if !ok {
				continue
			}
			last := as.Lhs[len(as.Lhs)-1]
			if id, ok := last.(*ast.Ident); ok && id.Name == "_" && len(as.Lhs) > 1 && len(as.Rhs) == 1 {
				if _, call := as.Rhs[0].(*ast.CallExpr); call {
					problems = append(problems, fmt.Sprintf("line %d discards a result (an error?) with _", line(as)))
				}
			}
			assignsErr := false
			for _, l := range as.Lhs {
				if id, ok := l.(*ast.Ident); ok && id.Name == "err" {
					assignsErr = true
				}
			}
			if assignsErr && (i+1 == len(list) || !mentionsErr(list[i+1])) {
				problems = append(problems, fmt.Sprintf("line %d assigns err, and the next statement does not check it", line(as)))
			}
		}
		return true
	})
	return problems
}

// TestREADMEProgramRunsAsPasted pastes the README's program into a main package of
// its own and runs it: it must compile, exit 0 and print the delivery it makes.
func TestREADMEProgramRunsAsPasted(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command to run the README's program with: %v", err)
	}
	snippets := goSnippets(t, "README.md")
	if len(snippets) == 0 || !regexp.MustCompile(`(?m)^package main$`).MatchString(snippets[0].text) {
		t.Fatalf("the README's first Go block is not a program (package main)")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(snippets[0].text), 0o644); err != nil {
		t.Fatal(err)
	}
	// Run from the module, so that its imports are this checkout's packages.
	cmd := exec.Command(goBin, "run", filepath.Join(dir, "main.go"))
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the README's program, pasted and run: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if stdout.Len() == 0 {
		t.Fatalf("the README's program printed nothing (stderr:\n%s)", stderr.String())
	}
	if want := "delivered order.created order-1\nread 1 from the log: 1 delivered, 0 to retry\n"; stdout.String() != want {
		t.Fatalf("the README's program printed:\n%s\nwant:\n%s", stdout.String(), want)
	}
}

package outbox_test

import (
	"bufio"
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The library knows no application: no library package depends on the reference app
// under examples/, and no library source names it or the design document it came from.
func TestLibraryKnowsNoApplication(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH; this test asks it for the import graph")
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	module := "github.com/fitiq/outbox"
	app := module + "/examples/"
	libraries := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		pkg := fields[0]
		if strings.HasPrefix(pkg, app) || strings.HasPrefix(pkg, module+"/cmd/") {
			continue
		}
		libraries++
		for _, dep := range fields[1:] {
			if strings.HasPrefix(dep, app) {
				t.Errorf("library package %s depends on the app package %s", pkg, dep)
			}
		}
	}
	if libraries < 5 {
		t.Fatalf("found %d library packages; the listing looks wrong:\n%s", libraries, out)
	}

	// Names of the app, or of the document it was designed in, in library source.
	named := regexp.MustCompile(`(?i)fitiq|\bseed\b|seed's`)
	err = filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (path == "examples" || path == "bench" || strings.HasPrefix(d.Name(), ".")) && path != "." {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(bytes.NewReader(src))
		for n := 1; sc.Scan(); n++ {
			line := strings.ReplaceAll(sc.Text(), module, "") // the module path is an import path, not a mention
			if named.MatchString(line) {
				t.Errorf("%s:%d names the application: %s", path, n, strings.TrimSpace(sc.Text()))
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A package links what it needs and nothing more: the observers and sinks link no
// database driver, and the core links none of the brokers' clients, so that using one
// piece never drags in another's dependencies.
func TestPackagesLinkOnlyWhatTheyNeed(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH; this test asks it for the import graph")
	}
	drivers := []string{"github.com/go-sql-driver/mysql", "github.com/jackc/pgx", "modernc.org/sqlite"}
	brokers := []string{"github.com/nats-io/", "github.com/rabbitmq/", "github.com/twmb/franz-go", "github.com/redis/"}
	cases := map[string][]string{
		".":                  append(append(slices.Clone(drivers), brokers...), "github.com/prometheus/", "go.opentelemetry.io/"),
		"./metrics":          append(slices.Clone(drivers), brokers...),
		"./oteloutbox":       append(slices.Clone(drivers), brokers...),
		"./inbox":            append(slices.Clone(drivers), brokers...),
		"./inbox/kafkainbox": append(slices.Clone(drivers), "github.com/nats-io/", "github.com/rabbitmq/", "github.com/redis/"),
		"./inbox/redisinbox": append(slices.Clone(drivers), "github.com/nats-io/", "github.com/rabbitmq/", "github.com/twmb/franz-go"),
		"./sink/httpsink":    append(slices.Clone(drivers), brokers...),
		"./sink/natssink":    drivers,
		"./sink/amqpsink":    drivers,
		"./sink/kafkasink":   drivers,
		"./sink/redissink":   drivers,
		"./sink/sqssink":     drivers,
		"./sink/pubsubsink":  drivers,
		"./outboxtest":       append(slices.Clone(drivers), brokers...),
		"./sqlite":           {"github.com/go-sql-driver/mysql", "github.com/jackc/pgx"},
		"./postgres":         {"github.com/go-sql-driver/mysql", "modernc.org/sqlite"},
		"./mysql":            {"github.com/jackc/pgx", "modernc.org/sqlite"},
		"./sink/sinktest":    drivers,
		"./dashboard":        append(slices.Clone(drivers), brokers...),
	}
	for pkg, banned := range cases {
		out, err := exec.Command("go", "list", "-deps", pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		for dep := range strings.Lines(string(out)) {
			for _, b := range banned {
				if strings.HasPrefix(strings.TrimSpace(dep), b) {
					t.Errorf("%s links %s", pkg, strings.TrimSpace(dep))
				}
			}
		}
	}
}

// The receiving side lives under inbox/: no library package outside it declares a
// consumer (an exported function, method or type named Consume…), and no sink depends
// on an inbox package (an inbox package may use its sink's header and field names).
func TestConsumersLiveUnderInbox(t *testing.T) {
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != "." && (path == "inbox" || path == "examples" || path == "bench" || path == "cmd" ||
			d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, decl := range f.Decls {
			var names []*ast.Ident
			switch decl := decl.(type) {
			case *ast.FuncDecl:
				names = append(names, decl.Name)
			case *ast.GenDecl:
				for _, spec := range decl.Specs {
					if ts, ok := spec.(*ast.TypeSpec); ok {
						names = append(names, ts.Name)
					}
				}
			}
			for _, n := range names {
				if n.IsExported() && strings.HasPrefix(n.Name, "Consume") {
					t.Errorf("%s declares %s: consumers belong under inbox/", path, n.Name)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH; this test asks it for the import graph")
	}
	out, err := exec.Command("go", "list", "-deps", "./sink/...").Output()
	if err != nil {
		t.Fatalf("go list -deps ./sink/...: %v", err)
	}
	for dep := range strings.Lines(string(out)) {
		if dep = strings.TrimSpace(dep); dep == "github.com/fitiq/outbox/inbox" || strings.HasPrefix(dep, "github.com/fitiq/outbox/inbox/") {
			t.Errorf("a sink links %s: the sinks must not depend on the receiving side", dep)
		}
	}
}

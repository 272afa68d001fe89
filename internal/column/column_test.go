package column_test

import (
	"database/sql"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fitiq/outbox/internal/column"
)

func TestTimesTravelAsUnixMicrosecondsAndNullWhenZero(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6789, time.FixedZone("x", 3600))
	if got := column.FromMicros(column.Micros(at)); !got.Equal(at.Truncate(time.Microsecond)) || got.Location() != time.UTC {
		t.Errorf("round trip of %v: %v, want it to the microsecond, in UTC", at, got)
	}
	if column.NullMicros(time.Time{}) != nil || column.NullMicros(at) != at.UnixMicro() {
		t.Error("NullMicros: want NULL for the zero time, microseconds otherwise")
	}
	if !column.FromNullMicros(sql.NullInt64{}).IsZero() {
		t.Error("FromNullMicros(NULL): want the zero time")
	}
	if column.NullString("") != nil || column.NullString("a") != "a" {
		t.Error("NullString: want NULL for empty, the string otherwise")
	}
}

func TestDecodeErrorsReadsTheHistory(t *testing.T) {
	type attempt struct {
		n   int
		at  time.Time
		err string
	}
	var got []attempt
	add := func(n int, at time.Time, err string) { got = append(got, attempt{n, at, err}) }
	if err := column.DecodeErrors(nil, add); err != nil || got != nil {
		t.Fatalf("NULL column: err %v, attempts %v; want nothing", err, got)
	}
	err := column.DecodeErrors([]byte(`[{"attempt":1,"at":1000001,"error":"boom"}]`), add)
	if err != nil || len(got) != 1 || got[0] != (attempt{1, time.UnixMicro(1000001).UTC(), "boom"}) {
		t.Fatalf("err %v, attempts %v", err, got)
	}
	if err := column.DecodeErrors([]byte(`[`), add); err == nil || !strings.HasPrefix(err.Error(), "decode errors: ") {
		t.Errorf("bad errors column: %v, want a decode errors error", err)
	}
}

// Metadata that is not a JSON object of strings (written by SQL) never fails the read:
// it reads as none, with the reason, which quotes what is wrong.
func TestDecodeMetadataNeverFailsAndSaysWhatIsWrong(t *testing.T) {
	for _, tc := range []struct {
		col  string
		want map[string]string
	}{
		{`{"k":"v","e":""}`, map[string]string{"k": "v", "e": ""}},
		{`{}`, map[string]string{}},
		{`null`, nil},
		{`{"k":null}`, map[string]string{"k": ""}},
	} {
		md, problem := column.DecodeMetadata([]byte(tc.col))
		if problem != "" || !maps.Equal(md, tc.want) || (md == nil) != (tc.want == nil) {
			t.Errorf("%s: %v, %q; want %v and no problem", tc.col, md, problem, tc.want)
		}
	}
	if md, problem := column.DecodeMetadata(nil); md != nil || problem != "" {
		t.Errorf("NULL: %v, %q; want nothing", md, problem)
	}
	for col, want := range map[string]string{
		`{"count": 1, "a": "b"}`:                `the value of "count" is a number: 1`,
		`{"nested": {"a": "b"}}`:                `the value of "nested" is an object: {"a":"b"}`,
		`{"ok": true}`:                          `the value of "ok" is a boolean: true`,
		`[1]`:                                   `it is an array: [1]`,
		`"x"`:                                   `it is a string: "x"`,
		`42`:                                    `it is a number: 42`,
		`source=billing`:                        `it is not JSON: "source=billing"`,
		`{"a":"` + long + `"`:                   `it is not JSON: "{\"a\":\"` + long[:114] + `"…`,
		`{"a": "b", "z": [1, 2]} `:              `the value of "z" is an array: [1,2]`,
		`[` + strings.Repeat(`"é",`, 40) + `1]`: `it is an array: [` + strings.Repeat(`"é",`, 23) + `"é"…`,
	} {
		md, problem := column.DecodeMetadata([]byte(col))
		if md != nil || problem != column.MetadataProblem+": "+want {
			t.Errorf("%s:\n got %v, %q\nwant nil, %q", col, md, problem, column.MetadataProblem+": "+want)
		}
	}
}

var long = strings.Repeat("é", 100)

func TestQuoteCutsOnARuneBoundary(t *testing.T) {
	if got := column.Quote("a\x00b"); got != `"a\x00b"` {
		t.Errorf("Quote: %s", got)
	}
	got := column.Quote(long)
	if !strings.HasSuffix(got, `"…`) || len(got) > 125 || !utf8.ValidString(got) {
		t.Errorf("Quote of 200 bytes: %s", got)
	}
}

func TestProblemsJoin(t *testing.T) {
	var p column.Problems
	p.Add("")
	if p.String() != "" {
		t.Errorf("no problems: %q", p.String())
	}
	p.Add("a")
	p.Add("b")
	if p.String() != "a; b" {
		t.Errorf("two problems: %q", p.String())
	}
}

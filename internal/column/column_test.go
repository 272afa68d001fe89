package column_test

import (
	"database/sql"
	"strings"
	"testing"
	"time"

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

func TestDecodeJSONReadsMetadataAndTheErrorsHistory(t *testing.T) {
	var metadata map[string]string
	type attempt struct {
		n   int
		at  time.Time
		err string
	}
	var got []attempt
	add := func(n int, at time.Time, err string) { got = append(got, attempt{n, at, err}) }
	if err := column.DecodeJSON(nil, nil, &metadata, add); err != nil || metadata != nil || got != nil {
		t.Fatalf("NULL columns: err %v, metadata %v, attempts %v; want nothing", err, metadata, got)
	}
	err := column.DecodeJSON([]byte(`{"k":"v"}`), []byte(`[{"attempt":1,"at":1000001,"error":"boom"}]`), &metadata, add)
	if err != nil || metadata["k"] != "v" || len(got) != 1 || got[0] != (attempt{1, time.UnixMicro(1000001).UTC(), "boom"}) {
		t.Fatalf("err %v, metadata %v, attempts %v", err, metadata, got)
	}
	if err := column.DecodeJSON([]byte(`{`), nil, &metadata, add); err == nil || !strings.HasPrefix(err.Error(), "decode metadata: ") {
		t.Errorf("bad metadata: %v, want a decode metadata error", err)
	}
	if err := column.DecodeJSON(nil, []byte(`[`), &metadata, add); err == nil || !strings.HasPrefix(err.Error(), "decode errors: ") {
		t.Errorf("bad errors column: %v, want a decode errors error", err)
	}
}

package fitiq

import (
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// ProgressType is what a progress entry measures.
type ProgressType string

const (
	ProgressWeight           ProgressType = "weight"
	ProgressSteps            ProgressType = "steps"
	ProgressBodyFat          ProgressType = "body_fat"
	ProgressRestingHeartRate ProgressType = "resting_heart_rate"
	ProgressSleep            ProgressType = "sleep"
	ProgressWater            ProgressType = "water"
	ProgressCalories         ProgressType = "calories"
)

// Quantity describes the unit and plausible range of a measured value.
type Quantity struct {
	Unit     string
	Min, Max float64
	// Whole means the value counts something (steps, beats) and has no fraction.
	Whole bool
}

// ProgressTypes maps each progress type to its unit and the range a value must lie in.
// The ranges reject typing slips (a weight of 7250 kg) without second-guessing anyone.
var ProgressTypes = map[ProgressType]Quantity{
	ProgressWeight:           {Unit: "kg", Min: 20, Max: 500},
	ProgressSteps:            {Unit: "steps", Min: 0, Max: 200_000, Whole: true},
	ProgressBodyFat:          {Unit: "%", Min: 2, Max: 75},
	ProgressRestingHeartRate: {Unit: "bpm", Min: 25, Max: 250, Whole: true},
	ProgressSleep:            {Unit: "h", Min: 0, Max: 24},
	ProgressWater:            {Unit: "L", Min: 0, Max: 20},
	ProgressCalories:         {Unit: "kcal", Min: 0, Max: 20_000, Whole: true},
}

// ProgressEntry is one measurement the user logs: a weight, a day's steps, a body-fat
// reading (the seed's ProgressEntry).
type ProgressEntry struct {
	Record
	Type     ProgressType `json:"type"`
	Quantity float64      `json:"quantity"`
	// Date is when the measurement was taken.
	Date  time.Time `json:"date"`
	Notes string    `json:"notes,omitempty"`
}

func (*ProgressEntry) Kind() Kind                        { return KindProgressEntry }
func (e *ProgressEntry) HistoryKey() (string, time.Time) { return string(e.Type), e.Date }

// Validate implements Entity.
func (e *ProgressEntry) Validate(now time.Time) error {
	if err := e.Record.validate(); err != nil {
		return err
	}
	q, ok := ProgressTypes[e.Type]
	if !ok {
		return fieldErr("type", "unknown progress type %q (want one of %s)", e.Type, strings.Join(progressTypeNames(), ", "))
	}
	return firstErr(
		checkQuantity("quantity", e.Quantity, q, string(e.Type)),
		checkDate("date", e.Date, now),
		checkText("notes", e.Notes, 0, 500),
	)
}

func progressTypeNames() []string {
	var names []string
	for t := range ProgressTypes {
		names = append(names, string(t))
	}
	slices.Sort(names)
	return names
}

// AttributeType is a body measurement kept as a physical attribute.
type AttributeType string

const (
	AttributeHeight AttributeType = "height"
	AttributeWaist  AttributeType = "waist"
	AttributeHip    AttributeType = "hip"
	AttributeChest  AttributeType = "chest"
	AttributeNeck   AttributeType = "neck"
	AttributeArm    AttributeType = "arm"
	AttributeThigh  AttributeType = "thigh"
)

// AttributeTypes maps each attribute to its unit and plausible range.
var AttributeTypes = map[AttributeType]Quantity{
	AttributeHeight: {Unit: "cm", Min: 50, Max: 272},
	AttributeWaist:  {Unit: "cm", Min: 30, Max: 250},
	AttributeHip:    {Unit: "cm", Min: 30, Max: 250},
	AttributeChest:  {Unit: "cm", Min: 40, Max: 250},
	AttributeNeck:   {Unit: "cm", Min: 15, Max: 80},
	AttributeArm:    {Unit: "cm", Min: 10, Max: 80},
	AttributeThigh:  {Unit: "cm", Min: 20, Max: 120},
}

// PhysicalAttribute is a body measurement taken at some time (the seed's
// SDPhysicalAttribute): a height, a waist circumference.
type PhysicalAttribute struct {
	Record
	Attribute  AttributeType `json:"attribute"`
	Value      float64       `json:"value"`
	MeasuredAt time.Time     `json:"measured_at"`
	Notes      string        `json:"notes,omitempty"`
}

func (*PhysicalAttribute) Kind() Kind { return KindPhysicalAttribute }
func (a *PhysicalAttribute) HistoryKey() (string, time.Time) {
	return string(a.Attribute), a.MeasuredAt
}

// Validate implements Entity.
func (a *PhysicalAttribute) Validate(now time.Time) error {
	if err := a.Record.validate(); err != nil {
		return err
	}
	q, ok := AttributeTypes[a.Attribute]
	if !ok {
		var names []string
		for t := range AttributeTypes {
			names = append(names, string(t))
		}
		slices.Sort(names)
		return fieldErr("attribute", "unknown attribute %q (want one of %s)", a.Attribute, strings.Join(names, ", "))
	}
	return firstErr(
		checkQuantity("value", a.Value, q, string(a.Attribute)),
		checkDate("measured_at", a.MeasuredAt, now),
		checkText("notes", a.Notes, 0, 500),
	)
}

// ActivitySnapshot is a day's activity summary, as a phone's health store reports it
// (the seed's SDActivitySnapshot).
type ActivitySnapshot struct {
	Record
	// Date is the day summarised (its midnight, UTC).
	Date           time.Time `json:"date"`
	Steps          int       `json:"steps"`
	ActiveMinutes  int       `json:"active_minutes"`
	CaloriesBurned float64   `json:"calories_burned"`
	DistanceMeters float64   `json:"distance_meters"`
	// AvgHeartRate is the day's mean heart rate in bpm; 0 when unknown.
	AvgHeartRate int `json:"avg_heart_rate,omitempty"`
}

func (*ActivitySnapshot) Kind() Kind                        { return KindActivitySnapshot }
func (s *ActivitySnapshot) HistoryKey() (string, time.Time) { return "", s.Date }

// Validate implements Entity.
func (s *ActivitySnapshot) Validate(now time.Time) error {
	if err := s.Record.validate(); err != nil {
		return err
	}
	errs := []error{
		checkDate("date", s.Date, now),
		checkQuantity("steps", float64(s.Steps), Quantity{Unit: "steps", Max: 200_000, Whole: true}, ""),
		checkQuantity("active_minutes", float64(s.ActiveMinutes), Quantity{Unit: "min", Max: 1440, Whole: true}, ""),
		checkQuantity("calories_burned", s.CaloriesBurned, Quantity{Unit: "kcal", Max: 20_000}, ""),
		checkQuantity("distance_meters", s.DistanceMeters, Quantity{Unit: "m", Max: 300_000}, ""),
	}
	if s.AvgHeartRate != 0 {
		errs = append(errs, checkQuantity("avg_heart_rate", float64(s.AvgHeartRate), Quantity{Unit: "bpm", Min: 25, Max: 250, Whole: true}, ""))
	}
	return firstErr(errs...)
}

// UnitSystem is how the user wants quantities shown.
type UnitSystem string

const (
	UnitsMetric   UnitSystem = "metric"
	UnitsImperial UnitSystem = "imperial"
)

// ProfileMetadata is the descriptive part of the user's profile (one per user).
type ProfileMetadata struct {
	Record
	Name       string     `json:"name"`
	Bio        string     `json:"bio,omitempty"`
	UnitSystem UnitSystem `json:"unit_system"`
	// Language is a BCP 47 tag such as "en" or "pt-BR".
	Language string `json:"language"`
}

func (*ProfileMetadata) Kind() Kind                      { return KindProfileMetadata }
func (*ProfileMetadata) HistoryKey() (string, time.Time) { return "", time.Time{} }

// Validate implements Entity.
func (p *ProfileMetadata) Validate(time.Time) error {
	if err := p.Record.validate(); err != nil {
		return err
	}
	if p.UnitSystem != UnitsMetric && p.UnitSystem != UnitsImperial {
		return fieldErr("unit_system", "%q is not metric or imperial", p.UnitSystem)
	}
	return firstErr(
		checkText("name", p.Name, 1, 100),
		checkText("bio", p.Bio, 0, 1000),
		checkLanguage(p.Language),
	)
}

// BiologicalSex is used by the health calculations that depend on it.
type BiologicalSex string

const (
	SexFemale      BiologicalSex = "female"
	SexMale        BiologicalSex = "male"
	SexIntersex    BiologicalSex = "intersex"
	SexUnspecified BiologicalSex = "unspecified"
)

// ProfilePhysical is the physical part of the user's profile (one per user).
type ProfilePhysical struct {
	Record
	BiologicalSex BiologicalSex `json:"biological_sex"`
	HeightCm      float64       `json:"height_cm"`
	DateOfBirth   time.Time     `json:"date_of_birth"`
}

func (*ProfilePhysical) Kind() Kind                      { return KindProfilePhysical }
func (*ProfilePhysical) HistoryKey() (string, time.Time) { return "", time.Time{} }

// Validate implements Entity.
func (p *ProfilePhysical) Validate(now time.Time) error {
	if err := p.Record.validate(); err != nil {
		return err
	}
	switch p.BiologicalSex {
	case SexFemale, SexMale, SexIntersex, SexUnspecified:
	default:
		return fieldErr("biological_sex", "%q is not female, male, intersex or unspecified", p.BiologicalSex)
	}
	if err := checkQuantity("height_cm", p.HeightCm, AttributeTypes[AttributeHeight], ""); err != nil {
		return err
	}
	if err := checkDate("date_of_birth", p.DateOfBirth, now); err != nil {
		return err
	}
	if p.DateOfBirth.After(now.AddDate(-1, 0, 0)) {
		return fieldErr("date_of_birth", "%s is less than a year ago", p.DateOfBirth.Format(time.DateOnly))
	}
	return nil
}

func (r *Record) validate() error {
	if r.ID == "" {
		return fieldErr("id", "must not be empty")
	}
	if _, err := uuid.Parse(r.ID); err != nil || len(r.ID) != 36 {
		return fieldErr("id", "%q is not a UUID", r.ID)
	}
	if r.Version < 1 {
		return fieldErr("version", "must be at least 1, got %d", r.Version)
	}
	return nil
}

// earliest is the oldest date any entry may carry.
var earliest = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)

// futureSlack lets a date run ahead of the receiver's clock by a day: time zones and
// clock skew, not entries from next week.
const futureSlack = 24 * time.Hour

func checkDate(field string, t, now time.Time) error {
	switch {
	case t.IsZero():
		return fieldErr(field, "must be set")
	case t.Before(earliest):
		return fieldErr(field, "%s is before %s", t.Format(time.DateOnly), earliest.Format(time.DateOnly))
	case t.After(now.Add(futureSlack)):
		return fieldErr(field, "%s is in the future", t.UTC().Format(time.RFC3339))
	}
	return nil
}

func checkQuantity(field string, v float64, q Quantity, what string) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fieldErr(field, "%v is not a number", v)
	}
	if v < q.Min || v > q.Max {
		for_ := ""
		if what != "" {
			for_ = " for " + what
		}
		return fieldErr(field, "%g %s is out of range%s (%g–%g %s)", v, q.Unit, for_, q.Min, q.Max, q.Unit)
	}
	if q.Whole && v != math.Trunc(v) {
		return fieldErr(field, "%g is not a whole number of %s", v, q.Unit)
	}
	return nil
}

func checkText(field, s string, minLen, maxLen int) error {
	if !utf8.ValidString(s) {
		return fieldErr(field, "is not valid UTF-8")
	}
	n := utf8.RuneCountInString(s)
	if minLen > 0 && strings.TrimSpace(s) == "" {
		return fieldErr(field, "must not be empty")
	}
	if n > maxLen {
		return fieldErr(field, "is %d characters, over the limit of %d", n, maxLen)
	}
	for _, r := range s {
		if r < 0x20 && r != '\n' && r != '\t' {
			return fieldErr(field, "contains a control character (%U)", r)
		}
	}
	return nil
}

func checkLanguage(tag string) error {
	if len(tag) < 2 || len(tag) > 35 {
		return fieldErr("language", "%q is not a language tag such as en or pt-BR", tag)
	}
	for i, part := range strings.Split(tag, "-") {
		if part == "" || len(part) > 8 || (i == 0 && len(part) > 3) {
			return fieldErr("language", "%q is not a language tag such as en or pt-BR", tag)
		}
		for _, r := range part {
			if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9') {
				return fieldErr("language", "%q is not a language tag such as en or pt-BR", tag)
			}
		}
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

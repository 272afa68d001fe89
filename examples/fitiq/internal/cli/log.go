package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/fitiq/outbox/examples/fitiq"
)

const logUsage = `Usage:
  fitiq log <type> <value> [flags]        a progress entry or a body measurement
  fitiq log activity [flags]              a day's activity snapshot
  fitiq log profile [flags]               your profile (created once, then updated)
  fitiq log physical [flags]              your physical profile (created once, then updated)

Saves the entry in the local database and its outbox event in the same transaction;
"fitiq sync" (or a running "fitiq sync --watch") delivers it.

Progress types: weight (kg), steps, body_fat (%), resting_heart_rate (bpm), sleep (h),
                water (L), calories (kcal)
Measurements:   height, waist, hip, chest, neck, arm, thigh (cm)

Flags:
  --date DATE        when it was measured: 2025-01-31 or 2025-01-31T08:00:00Z (default now)
  --notes TEXT       a note (progress entries and measurements)
  --id ID            update the entry with this ID instead of creating one
  activity:  --steps N --active-minutes N --calories KCAL --distance METERS --heart-rate BPM
  profile:   --name NAME --bio TEXT --units metric|imperial --language TAG
  physical:  --sex female|male|intersex|unspecified --height CM --birth DATE
` + clientFlagsHelp + `
Examples:
  fitiq log weight 72.5
  fitiq log steps 8500 --date 2025-01-30
  fitiq log body_fat 18.4 --notes "after the holidays"
  fitiq log weight 72.1 --id 0194b7c2-…            # correct an earlier entry
  fitiq log waist 82
  fitiq log activity --steps 9000 --active-minutes 48 --calories 540 --distance 6400
  fitiq log profile --name "Ada" --units metric --language en
  fitiq log physical --sex female --height 168 --birth 1990-04-01
`

func runLog(ctx context.Context, args []string, out, errOut io.Writer) int {
	fs := flag.NewFlagSet("log", flag.ContinueOnError)
	var cf clientFlags
	cf.register(fs)
	var (
		date, notes, id                        string
		steps, activeMinutes, heartRate        int
		calories, distance, height             float64
		name, bio, units, language, sex, birth string
	)
	fs.StringVar(&date, "date", "", "")
	fs.StringVar(&notes, "notes", "", "")
	fs.StringVar(&id, "id", "", "")
	fs.IntVar(&steps, "steps", 0, "")
	fs.IntVar(&activeMinutes, "active-minutes", 0, "")
	fs.IntVar(&heartRate, "heart-rate", 0, "")
	fs.Float64Var(&calories, "calories", 0, "")
	fs.Float64Var(&distance, "distance", 0, "")
	fs.Float64Var(&height, "height", 0, "")
	fs.StringVar(&name, "name", "", "")
	fs.StringVar(&bio, "bio", "", "")
	fs.StringVar(&units, "units", string(fitiq.UnitsMetric), "")
	fs.StringVar(&language, "language", "en", "")
	fs.StringVar(&sex, "sex", "", "")
	fs.StringVar(&birth, "birth", "", "")
	pos, code, ok := parse(fs, logUsage, args, out, errOut)
	if !ok {
		return code
	}
	if len(pos) == 0 {
		return usageError(errOut, "log", "what to log is missing: a type and a value (fitiq log weight 72.5), or activity, profile, physical")
	}
	when := time.Now()
	if date != "" {
		t, err := fitiq.ParseDate(date)
		if err != nil {
			return usageError(errOut, "log", "--date: %v", err)
		}
		when = t
	}
	what := strings.ReplaceAll(pos[0], "-", "_")
	wantArgs := 2
	switch what {
	case "activity", "profile", "physical":
		wantArgs = 1
	}
	if len(pos) != wantArgs {
		if wantArgs == 2 && len(pos) == 1 {
			return usageError(errOut, "log", "%s needs a value: fitiq log %s <value>", pos[0], pos[0])
		}
		return usageError(errOut, "log", "unexpected arguments %q", pos[wantArgs:])
	}
	var value float64
	if wantArgs == 2 {
		v, err := strconv.ParseFloat(pos[1], 64)
		if err != nil {
			return usageError(errOut, "log", "value %q is not a number", pos[1])
		}
		value = v
	}
	_, isProgress := fitiq.ProgressTypes[fitiq.ProgressType(what)]
	_, isAttribute := fitiq.AttributeTypes[fitiq.AttributeType(what)]
	if !isProgress && !isAttribute && wantArgs == 2 {
		return usageError(errOut, "log", "unknown type %q; see fitiq log --help for the list", pos[0])
	}

	c, err := cf.open(ctx, cf.logger(errOut))
	if err != nil {
		return failed(errOut, "log", err)
	}
	defer c.closer()
	app := c.app
	rec := fitiq.Record{ID: id}
	if id != "" {
		// --id corrects an existing entry; an unknown ID is a typo, not a new entry.
		k := fitiq.KindProgressEntry
		switch {
		case isAttribute:
			k = fitiq.KindPhysicalAttribute
		case what == "activity":
			k = fitiq.KindActivitySnapshot
		case what == "profile":
			k = fitiq.KindProfileMetadata
		case what == "physical":
			k = fitiq.KindProfilePhysical
		}
		e, err := app.Local().Get(ctx, k, id)
		if err != nil || e.Base().UserID != cf.user {
			return usageError(errOut, "log", "--id: no %s %q of user %s on this device", k, id, cf.user)
		}
	}
	var saved fitiq.Entity
	switch {
	case isProgress:
		e, err := fitiq.SaveProgressEntryUseCase{App: app}.Execute(ctx, fitiq.ProgressEntry{Record: rec, Type: fitiq.ProgressType(what), Quantity: value, Date: when, Notes: notes})
		if err != nil {
			return saveFailed(errOut, err)
		}
		saved = &e
		fmt.Fprintf(out, "saved %s %g %s on %s", e.Type, e.Quantity, fitiq.ProgressTypes[e.Type].Unit, e.Date.Format("2006-01-02 15:04 MST"))
	case isAttribute:
		e, err := fitiq.SavePhysicalAttributeUseCase{App: app}.Execute(ctx, fitiq.PhysicalAttribute{Record: rec, Attribute: fitiq.AttributeType(what), Value: value, MeasuredAt: when, Notes: notes})
		if err != nil {
			return saveFailed(errOut, err)
		}
		saved = &e
		fmt.Fprintf(out, "saved %s %g %s on %s", e.Attribute, e.Value, fitiq.AttributeTypes[e.Attribute].Unit, e.MeasuredAt.Format("2006-01-02 15:04 MST"))
	case what == "activity":
		e, err := fitiq.SaveActivitySnapshotUseCase{App: app}.Execute(ctx, fitiq.ActivitySnapshot{Record: rec, Date: when, Steps: steps,
			ActiveMinutes: activeMinutes, CaloriesBurned: calories, DistanceMeters: distance, AvgHeartRate: heartRate})
		if err != nil {
			return saveFailed(errOut, err)
		}
		saved = &e
		fmt.Fprintf(out, "saved activity of %s: %d steps, %d active minutes, %g kcal, %g m", e.Date.Format(time.DateOnly), e.Steps, e.ActiveMinutes, e.CaloriesBurned, e.DistanceMeters)
	case what == "profile":
		e, err := fitiq.SaveProfileMetadataUseCase{App: app}.Execute(ctx, fitiq.ProfileMetadata{Record: rec, Name: name, Bio: bio, UnitSystem: fitiq.UnitSystem(units), Language: language})
		if err != nil {
			return saveFailed(errOut, err)
		}
		saved = &e
		fmt.Fprintf(out, "saved profile of %s (%s, %s)", e.Name, e.UnitSystem, e.Language)
	case what == "physical":
		var born time.Time
		if birth != "" {
			if born, err = fitiq.ParseDate(birth); err != nil {
				return usageError(errOut, "log", "--birth: %v", err)
			}
		}
		e, err := fitiq.SaveProfilePhysicalUseCase{App: app}.Execute(ctx, fitiq.ProfilePhysical{Record: rec, BiologicalSex: fitiq.BiologicalSex(sex), HeightCm: height, DateOfBirth: born})
		if err != nil {
			return saveFailed(errOut, err)
		}
		saved = &e
		fmt.Fprintf(out, "saved physical profile (%s, %g cm, born %s)", e.BiologicalSex, e.HeightCm, e.DateOfBirth.Format(time.DateOnly))
	}
	b := saved.Base()
	verb := "created"
	if b.Version > 1 {
		verb = fmt.Sprintf("updated to version %d", b.Version)
	}
	fmt.Fprintf(out, "\n  %s %s %s; its sync event is pending (run \"fitiq sync\")\n", saved.Kind(), b.ID, verb)
	return exitOK
}

func saveFailed(errOut io.Writer, err error) int {
	var fe *fitiq.FieldError
	if asFieldError(err, &fe) {
		fmt.Fprintf(errOut, "fitiq log: %v (nothing was saved)\n", err)
		return exitUsage
	}
	return failed(errOut, "log", err)
}

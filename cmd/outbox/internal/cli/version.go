package cli

import (
	"context"
	"fmt"
	"runtime/debug"
	"strings"
)

// The version command (also 'outbox --version').
var versionCmd = &command{
	name: "version", args: "",
	summary: "Print the module version and the VCS revision the command was built from.",
	help: `
One line: the module's version ("(devel)" for a build from a checkout), its path, and,
when the build recorded them, the commit it was built from, the commit's time,
"modified" when the working tree had uncommitted changes, and the Go version.

Examples:
  outbox version
  outbox --version`,
	run: func(ctx context.Context, env *Env, c *call) error {
		if err := noArgs(c); err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, versionLine(env.buildInfo()))
		return nil
	},
}

// modulePath is the module the command belongs to, for builds that do not record it.
const modulePath = "github.com/fitiq/outbox"

// versionLine describes the build: "outbox v1.2.0 (github.com/fitiq/outbox, revision
// 0123abcd…, 2026-05-06T07:08:09Z, modified, go1.26.0)".
func versionLine(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return "outbox (unknown version: the binary carries no build information)"
	}
	version, path := bi.Main.Version, bi.Main.Path
	if version == "" {
		version = "(devel)"
	}
	if path == "" || !strings.HasPrefix(bi.Path, path) {
		path = modulePath
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	parts := []string{path}
	if rev := settings["vcs.revision"]; rev != "" {
		parts = append(parts, "revision "+rev)
		if t := settings["vcs.time"]; t != "" {
			parts = append(parts, t)
		}
		if settings["vcs.modified"] == "true" {
			parts = append(parts, "modified")
		}
	} else {
		parts = append(parts, "no VCS revision recorded")
	}
	if bi.GoVersion != "" {
		parts = append(parts, bi.GoVersion)
	}
	return fmt.Sprintf("outbox %s (%s)", version, strings.Join(parts, ", "))
}

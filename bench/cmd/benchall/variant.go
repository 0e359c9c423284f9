package main

import (
	"fmt"
	"strconv"
	"strings"
)

// variant is one server configuration under test: an implementation with
// extra environment and flags, under its own label in the report. A plain
// implementation name is a variant with no extras.
type variant struct {
	Label string   `json:"label"`
	Impl  string   `json:"impl"`
	Bin   string   `json:"bin,omitempty"` // another server binary (IMPL@PATH), e.g. a build of an older commit
	Env   []string `json:"env,omitempty"`
	Flags []string `json:"flags,omitempty"`
}

// parseVariant reads LABEL=SPEC, where SPEC is space-separated: KEY=VALUE
// environment settings first, then the implementation (IMPL, or IMPL@PATH
// for a server binary other than the one benchall built), then server
// flags.
//
//	wsloop-rp=wsloop -reuseport
//	wsloop-l4=GOMAXPROCS=4 wsloop -loops 4 -opt ReadBufferCap=16384
//	wsloop-base=wsloop@bin/server-base
func parseVariant(s string) (variant, error) {
	label, spec, ok := strings.Cut(s, "=")
	label = strings.TrimSpace(label)
	if !ok || label == "" || strings.ContainsAny(label, " |") {
		return variant{}, fmt.Errorf("variant %q: want LABEL=[ENV=VALUE ...] IMPL [server flags]", s)
	}
	v := variant{Label: label}
	for _, tok := range strings.Fields(spec) {
		switch {
		case v.Impl == "" && !strings.HasPrefix(tok, "-") && strings.Contains(tok, "="):
			v.Env = append(v.Env, tok)
		case v.Impl == "":
			if strings.HasPrefix(tok, "-") {
				return variant{}, fmt.Errorf("variant %q: flag %s before the implementation", s, tok)
			}
			v.Impl, v.Bin, _ = strings.Cut(tok, "@")
		default:
			v.Flags = append(v.Flags, tok)
		}
	}
	if v.Impl == "" {
		return variant{}, fmt.Errorf("variant %q names no implementation", s)
	}
	return v, nil
}

// String gives the variant back in the form parseVariant reads.
func (v variant) String() string {
	impl := v.Impl
	if v.Bin != "" {
		impl += "@" + v.Bin
	}
	parts := append(append(append([]string(nil), v.Env...), impl), v.Flags...)
	return v.Label + "=" + strings.Join(parts, " ")
}

// serverEnv is the environment of a server process: the harness's own
// without the Go runtime's memory knobs (the bench servers run with the
// defaults a user gets unless a variant sets them explicitly), then the
// variant's settings.
func serverEnv(base []string, v variant) []string {
	var env []string
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if k == "GOGC" || k == "GOMEMLIMIT" || k == "GOMAXPROCS" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, v.Env...)
}

// splitCPUs picks disjoint CPU sets for the server and the load generator:
// "auto" gives the first half of the machine's CPUs to the server and the
// second half to the client when there are 4 or more (the load generator
// then gets as many loops as CPUs), and pins nothing on fewer, where
// splitting two cores would only halve both sides.
func splitCPUs(server, client string, ncpu int) (string, string) {
	if server == "auto" || client == "auto" {
		if ncpu < 4 {
			return "", ""
		}
		h := ncpu / 2
		s, c := fmt.Sprintf("0-%d", h-1), fmt.Sprintf("%d-%d", h, ncpu-1)
		if server != "auto" {
			s = server
		}
		if client != "auto" {
			c = client
		}
		return s, c
	}
	return server, client
}

// countCPUs returns how many CPUs a taskset-style list names (0 for "").
func countCPUs(list string) int {
	n := 0
	for _, part := range strings.Split(list, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, ok := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if ok {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		n += b - a + 1
	}
	return n
}

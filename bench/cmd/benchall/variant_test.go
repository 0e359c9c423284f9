package main

import (
	"slices"
	"testing"
)

func TestParseVariant(t *testing.T) {
	v, err := parseVariant("wsloop-l4=GOMAXPROCS=4 GODEBUG=x=1 wsloop -loops 4 -opt A=B")
	if err != nil {
		t.Fatal(err)
	}
	if v.Label != "wsloop-l4" || v.Impl != "wsloop" || !slices.Equal(v.Env, []string{"GOMAXPROCS=4", "GODEBUG=x=1"}) ||
		!slices.Equal(v.Flags, []string{"-loops", "4", "-opt", "A=B"}) {
		t.Fatalf("parsed %+v", v)
	}
	if got := v.String(); got != "wsloop-l4=GOMAXPROCS=4 GODEBUG=x=1 wsloop -loops 4 -opt A=B" {
		t.Fatalf("String() = %q", got)
	}
	for _, bad := range []string{"wsloop", "=wsloop", "x=", "x=GOGC=1", "x=-loops 2 wsloop", "a b=wsloop", "a|b=wsloop"} {
		if _, err := parseVariant(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestServerEnvDropsRuntimeKnobs(t *testing.T) {
	env := serverEnv([]string{"PATH=/bin", "GOGC=50", "GOMEMLIMIT=1GiB", "GOMAXPROCS=3", "HOME=/h"}, variant{Env: []string{"GOGC=200"}})
	if !slices.Equal(env, []string{"PATH=/bin", "HOME=/h", "GOGC=200"}) {
		t.Fatalf("env %v", env)
	}
}

func TestSplitCPUs(t *testing.T) {
	for _, tc := range []struct {
		s, c   string
		n      int
		ws, wc string
	}{
		{"auto", "auto", 2, "", ""},
		{"auto", "auto", 16, "0-7", "8-15"},
		{"auto", "auto", 4, "0-1", "2-3"},
		{"0-3", "auto", 16, "0-3", "8-15"},
		{"0", "1", 2, "0", "1"},
		{"", "", 16, "", ""},
	} {
		s, c := splitCPUs(tc.s, tc.c, tc.n)
		if s != tc.ws || c != tc.wc {
			t.Errorf("splitCPUs(%q,%q,%d) = %q,%q want %q,%q", tc.s, tc.c, tc.n, s, c, tc.ws, tc.wc)
		}
	}
	if n := countCPUs("0-7,9,12-13"); n != 11 {
		t.Errorf("countCPUs = %d", n)
	}
}

func TestParseVariantBinary(t *testing.T) {
	v, err := parseVariant("wsloop-base=GOGC=50 wsloop@bin/server-base -loops 2")
	if err != nil {
		t.Fatal(err)
	}
	if v.Impl != "wsloop" || v.Bin != "bin/server-base" || len(v.Env) != 1 || len(v.Flags) != 2 {
		t.Fatalf("parsed %+v", v)
	}
	if got := v.String(); got != "wsloop-base=GOGC=50 wsloop@bin/server-base -loops 2" {
		t.Errorf("String() = %q", got)
	}
}

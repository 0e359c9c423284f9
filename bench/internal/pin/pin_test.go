package pin

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{
		{"0", []int{0}},
		{"0-3", []int{0, 1, 2, 3}},
		{"8-9,2,4-5", []int{8, 9, 2, 4, 5}},
		{"1,1,0-1", []int{1, 0}},
	} {
		set, cpus, err := Parse(tc.in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.in, err)
		}
		if len(cpus) != len(tc.want) || set.Count() != len(tc.want) {
			t.Fatalf("Parse(%q) = %v (count %d), want %v", tc.in, cpus, set.Count(), tc.want)
		}
		for i, c := range tc.want {
			if cpus[i] != c || !set.IsSet(c) {
				t.Fatalf("Parse(%q) = %v, want %v", tc.in, cpus, tc.want)
			}
		}
	}
	for _, bad := range []string{"", "x", "3-1", "-1", "0-2000", ","} {
		if _, _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

// TestApply runs this test binary again as a child that pins itself to
// the first CPU it may use and reports what the runtime then sees.
func TestApply(t *testing.T) {
	if cpu := os.Getenv("PIN_TEST_CHILD"); cpu != "" {
		if err := Apply(cpu); err != nil {
			t.Fatal(err)
		}
		// Reached only in the re-executed process.
		os.Stdout.WriteString("PINNED " + Current() + " " + strconv.Itoa(runtime.GOMAXPROCS(0)) + " " + os.Getenv(envDone) + "\n")
		return
	}
	first := strings.FieldsFunc(Current(), func(r rune) bool { return r == ',' || r == '-' })[0]
	cmd := exec.Command(os.Args[0], "-test.run=^TestApply$", "-test.v")
	cmd.Env = append(os.Environ(), "PIN_TEST_CHILD="+first)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := "PINNED " + first + " 1 \n"
	if !strings.Contains(string(out), want) {
		t.Fatalf("child output lacks %q:\n%s", want, out)
	}
}

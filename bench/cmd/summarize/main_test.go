package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestSummarizeBoth(t *testing.T) {
	var out bytes.Buffer
	bench := `[{"impl":"wsloop","case":"echo 1000 x 1 KiB","rep":1,"result":{"scenario":"echo","msgs_per_sec":123456,"lat_p50_us":1500,"lat_p99_us":9000,"lat_p999_us":20000,"server_cpu_per_million":7.5}},
{"impl":"gws","case":"echo 1000 x 1 KiB","rep":1,"error":"skipped: time budget spent"}]`
	if err := summarize(&out, "tail.json", []byte(bench)); err != nil {
		t.Fatal(err)
	}
	million := `{"preflight":[],"results":[{"impl":"wsloop","target":1002000,"connected":1002000,"servers":60,"server_rss_per_conn":851.2,"kernel_slab_objects_per_conn":6300,"sample_sent":100,"sample_ok":100}]}`
	if err := summarize(&out, "million.json", []byte(million)); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"123456", "1.50", "9.00", "20.00", "7.50", "skipped: time budget spent", "1002000", "851", "6300", "100/100"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if err := summarize(&out, "bad.json", []byte("{")); err == nil {
		t.Error("bad JSON accepted")
	}
}

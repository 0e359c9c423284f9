package proc

import "testing"

func TestParseSlabInfo(t *testing.T) {
	in := `slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
TCP                  104    156   2368   13    8 : tunables    0    0    0 : slabdata     12     12      0
eventpoll_epi      37718  51008    128   32    1 : tunables    0    0    0 : slabdata   1594   1594      0
short line
`
	m := parseSlabInfo(in)
	if len(m) != 2 {
		t.Fatalf("parsed %d caches: %v", len(m), m)
	}
	tcp := m["TCP"]
	if tcp.Active != 104 || tcp.Total != 156 || tcp.ObjSize != 2368 || tcp.PagesPerSlab != 8 || tcp.Slabs != 12 {
		t.Fatalf("TCP = %+v", tcp)
	}
	if got := m["eventpoll_epi"].ActiveBytes(); got != 37718*128 {
		t.Fatalf("ActiveBytes = %d", got)
	}
}

func TestReadKernelFiles(t *testing.T) {
	mi, err := MemInfo()
	if err != nil {
		t.Skip("no /proc/meminfo:", err)
	}
	if mi["MemTotal"] <= 0 {
		t.Fatalf("MemTotal = %d", mi["MemTotal"])
	}
	if _, err := ReadSockStat(); err != nil {
		t.Fatal(err)
	}
}

package main

import "testing"

func TestSize(t *testing.T) {
	for _, tc := range []struct {
		n, capacity              int
		servers, clients, srcPer int // given
		ws, wc, wsrc, wperClient int
	}{
		// The device: 20,000 descriptors per process, a million connections.
		{1002000, 19900, 0, 0, 0, 60, 51, 3, 19648},
		{1002000, 19900, 60, 0, 0, 60, 51, 3, 19648},
		// This machine's small run.
		{50000, 19900, 0, 0, 0, 3, 3, 3, 16667},
		// Given counts are kept.
		{40000, 19900, 5, 8, 2, 5, 8, 2, 5000},
	} {
		s, c, src, per := size(tc.n, tc.capacity, 0.85, tc.servers, tc.clients, tc.srcPer)
		if s != tc.ws || c != tc.wc || src != tc.wsrc || per != tc.wperClient {
			t.Errorf("size(%d, %d) = %d servers, %d clients, %d sources, %d per client; want %d, %d, %d, %d",
				tc.n, tc.capacity, s, c, src, per, tc.ws, tc.wc, tc.wsrc, tc.wperClient)
		}
		if s*tc.capacity < tc.n || per > tc.capacity {
			t.Errorf("size(%d): %d servers or %d per client do not fit %d descriptors", tc.n, s, per, tc.capacity)
		}
	}
}

// Package payload makes the messages the compression benchmarks send.
package payload

import (
	"fmt"
	"math/rand"
)

// JSON returns 16 different JSON-like messages of n bytes: records of one
// shape (the fields of a trading feed) with random values, compressible
// about 4:1. The same n gives the same messages, in every tool.
func JSON(n int) [][]byte {
	rng := rand.New(rand.NewSource(int64(n)))
	var out [][]byte
	for range 16 {
		var b []byte
		for len(b) < n {
			b = fmt.Appendf(b, `{"id":%d,"user":"user%d","price":%d.%02d,"side":"%s","tags":["fx","eu"]},`,
				rng.Intn(1e6), rng.Intn(500), rng.Intn(1000), rng.Intn(100), [2]string{"buy", "sell"}[rng.Intn(2)])
		}
		out = append(out, b[:n])
	}
	return out
}

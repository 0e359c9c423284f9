package codec

import (
	"math/rand"
	"reflect"
	"testing"
	"unicode/utf8"
)

// genStream builds a random valid byte stream: several messages (text with
// multi-byte characters, or binary), each cut into random fragments at
// random byte offsets (so code points are split across frames), with pings
// and pongs between the fragments, random lengths around the length-form
// boundaries, and sometimes a close at the end. It returns the stream and
// the logical events a decoder must produce.
func genStream(rng *rand.Rand, client, compression bool, maxLen int) ([]byte, []rec) {
	var in []byte
	var want []rec
	runes := []rune{'a', 'z', ' ', 'µ', 'κ', '€', 0xFFFD, 0x10000, 0x1F600, 0x10FFFF}
	enc := func(fin bool, op OpCode, rsv byte, p []byte) {
		if client {
			in = AppendFrame(in, fin, op, rsv, p)
		} else {
			var m [4]byte
			rng.Read(m[:])
			in = AppendMaskedFrame(in, fin, op, rsv, m, p)
		}
	}
	control := func() {
		op := OpPing
		if rng.Intn(2) == 0 {
			op = OpPong
		}
		p := make([]byte, rng.Intn(126))
		rng.Read(p)
		enc(true, op, 0, p)
		want = append(want, ctl(op, string(p)))
	}
	for m := rng.Intn(5) + 1; m > 0; m-- {
		// A message length, often near a boundary of the length forms.
		var n int
		switch rng.Intn(4) {
		case 0:
			n = []int{0, 1, 125, 126, 127, 65535, 65536}[rng.Intn(7)]
		default:
			n = rng.Intn(maxLen + 1)
		}
		if n > maxLen {
			n = maxLen
		}
		op := OpBinary
		var payload []byte
		if rng.Intn(2) == 0 {
			op = OpText
			for len(payload) < n {
				payload = utf8.AppendRune(payload, runes[rng.Intn(len(runes))])
			}
		} else {
			payload = make([]byte, n)
			rng.Read(payload)
		}
		comp := compression && rng.Intn(2) == 0
		var rsv byte
		if comp {
			rsv = 0x40
		}
		// Cut into fragments at random offsets.
		var cuts []int
		for k := rng.Intn(4); k > 0; k-- {
			cuts = append(cuts, rng.Intn(len(payload)+1))
		}
		sortInts(cuts)
		cuts = append(cuts, len(payload))
		// The message is logically where its first fragment is.
		want = append(want, rec{Kind: EventData, Op: op, Data: string(payload), First: true, Final: true, Comp: comp})
		start := 0
		fop := op
		for i, end := range cuts {
			enc(i == len(cuts)-1, fop, rsv, payload[start:end])
			fop, rsv, start = OpContinuation, 0, end
			if i < len(cuts)-1 && rng.Intn(3) == 0 {
				control()
			}
		}
		if rng.Intn(3) == 0 {
			control()
		}
	}
	if rng.Intn(3) == 0 {
		var p []byte
		p = AppendClosePayload(p, 1000+uint16(rng.Intn(4)), "bye κ")
		enc(true, OpClose, 0, p)
		code, reason, _ := ParseClose(p)
		want = append(want, rec{Kind: EventControl, Op: OpClose, Data: string(p), Code: code, Reason: string(reason)})
	}
	return in, want
}

// runSplit feeds in, cut at the given increasing offsets, through the
// event-loop driver, on its own copy of the input (the decoder unmasks in
// place).
func runSplit(t *testing.T, cfg Decoder, in []byte, cuts []int) []rec {
	t.Helper()
	d := cfg
	dr := &driver{t: t, d: &d}
	cp := append([]byte(nil), in...)
	start := 0
	for _, c := range append(cuts, len(cp)) {
		if c < start {
			continue
		}
		dr.feed(cp[start:c])
		start = c
	}
	if dr.err != nil {
		t.Fatalf("valid stream failed: %v (cuts %v)", dr.err, cuts)
	}
	if len(dr.buf) != 0 {
		t.Fatalf("%d bytes left unconsumed (cuts %v)", len(dr.buf), cuts)
	}
	return logical(dr.evs)
}

// TestSplitInvariance is the property test of the issue: any valid byte
// stream fed whole, one byte at a time, or split at every possible point
// gives the same logical events (data joined per message, control frames
// as they are), and those are the ones the stream encodes.
func TestSplitInvariance(t *testing.T) {
	rng := rand.New(rand.NewSource(6455))
	streams := 300
	if testing.Short() {
		streams = 40
	}
	for i := 0; i < streams; i++ {
		client := i%3 == 2
		comp := i%4 == 1
		cfg := Decoder{Client: client, Compression: comp}
		maxLen := 200
		if i%25 == 0 {
			maxLen = 70000 // the 64-bit length form now and then
		}
		in, want := genStream(rng, client, comp, maxLen)
		check := func(how string, got []rec) {
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("stream %d (%d bytes, client=%v comp=%v) %s:\n got %s\nwant %s", i, len(in), client, comp, how, recsString(got), recsString(want))
			}
		}
		check("whole", runSplit(t, cfg, in, nil))
		if len(in) > 4096 {
			// Big streams: byte by byte would be slow; random cuts.
			for k := 0; k < 20; k++ {
				var cuts []int
				for c := rng.Intn(50); c > 0; c-- {
					cuts = append(cuts, rng.Intn(len(in)+1))
				}
				sortInts(cuts)
				check("random cuts", runSplit(t, cfg, in, cuts))
			}
			continue
		}
		every := make([]int, 0, len(in))
		for k := 1; k < len(in); k++ {
			every = append(every, k)
		}
		check("byte by byte", runSplit(t, cfg, in, every))
		for k := 0; k <= len(in); k++ {
			check("split at "+itoa(k), runSplit(t, cfg, in, []int{k}))
		}
		var cuts []int
		for c := rng.Intn(10); c > 0; c-- {
			cuts = append(cuts, rng.Intn(len(in)+1))
		}
		sortInts(cuts)
		check("random cuts", runSplit(t, cfg, in, cuts))
	}
}

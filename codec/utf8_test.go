package codec

import (
	"math/rand"
	"testing"
	"unicode/utf8"
)

// validPrefix is the reference for fail-fast validation: p can still be
// the beginning of valid UTF-8, that is, some completion of its last
// (possibly cut) character makes it valid. The continuation bytes tried
// cover every narrowed range of RFC 3629 §4 (0x80 for ED/F4, 0x90 for F0,
// 0xA0 for E0).
func validPrefix(p []byte) bool {
	if utf8.Valid(p) {
		return true
	}
	cont := []byte{0x80, 0x90, 0xA0}
	buf := make([]byte, len(p), len(p)+3)
	copy(buf, p)
	var try func(b []byte, left int) bool
	try = func(b []byte, left int) bool {
		if utf8.Valid(b) {
			return true
		}
		if left == 0 {
			return false
		}
		for _, c := range cont {
			if try(append(b, c), left-1) {
				return true
			}
		}
		return false
	}
	return try(buf, 3)
}

// checkSplit feeds p to a fresh validator in the pieces given by cuts
// (increasing offsets) and checks the result against the references: the
// first piece to fail is the one holding the first byte at which the
// prefix stops being a valid prefix, and the whole is accepted exactly
// when utf8.Valid accepts it.
func checkSplit(t *testing.T, p []byte, cuts []int) {
	t.Helper()
	// Where must it fail? At the first k such that p[:k] is not a valid
	// prefix.
	failAt := -1
	for k := 1; k <= len(p); k++ {
		if !validPrefix(p[:k]) {
			failAt = k
			break
		}
	}
	var v UTF8Validator
	start := 0
	for _, end := range append(cuts, len(p)) {
		if end < start {
			continue
		}
		ok := v.Write(p[start:end])
		mustFail := failAt > start && failAt <= end
		if ok == mustFail {
			t.Fatalf("%x cut at %v: Write(p[%d:%d]) = %v, first invalid prefix ends at %d", p, cuts, start, end, ok, failAt)
		}
		if !ok {
			return
		}
		start = end
	}
	if failAt >= 0 {
		t.Fatalf("%x cut at %v: accepted, but invalid at %d", p, cuts, failAt)
	}
	if v.Complete() != utf8.Valid(p) {
		t.Fatalf("%x cut at %v: Complete() = %v, utf8.Valid = %v", p, cuts, v.Complete(), utf8.Valid(p))
	}
}

// checkAllSplits runs checkSplit whole, byte by byte, and cut in two at
// every point.
func checkAllSplits(t *testing.T, p []byte) {
	t.Helper()
	checkSplit(t, p, nil)
	every := make([]int, 0, len(p))
	for i := 1; i < len(p); i++ {
		every = append(every, i)
	}
	checkSplit(t, p, every)
	for i := 0; i <= len(p); i++ {
		checkSplit(t, p, []int{i})
	}
}

// utf8Cases are the sequences of the Autobahn 6.x cases (from Markus
// Kuhn's UTF-8 decoder capability and stress test) and a few more, with
// whether each is valid UTF-8 (RFC 3629).
var utf8Cases = []struct {
	name  string
	in    string
	valid bool
}{
	{"6.1 empty", "", true},
	{"6.2 hello", "Hello-µ@ßöäüàá-UTF-8!!", true},
	{"6.3 kosme with surrogate", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64", false},
	{"6.5 kosme", "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", true},
	{"6.7.1 first 1-byte", "\x00", true},
	{"6.7.2 first 2-byte", "\xc2\x80", true},
	{"6.7.3 first 3-byte", "\xe0\xa0\x80", true},
	{"6.7.4 first 4-byte", "\xf0\x90\x80\x80", true},
	{"6.8.1 first 5-byte", "\xf8\x88\x80\x80\x80", false},
	{"6.8.2 first 6-byte", "\xfc\x84\x80\x80\x80\x80", false},
	{"6.9.1 last 1-byte", "\x7f", true},
	{"6.9.2 last 2-byte", "\xdf\xbf", true},
	{"6.9.3 last 3-byte", "\xef\xbf\xbf", true},
	{"6.9.4 last 4-byte U+10FFFF", "\xf4\x8f\xbf\xbf", true},
	{"6.10.1 F7", "\xf7\xbf\xbf\xbf", false},
	{"6.10.2 FB", "\xfb\xbf\xbf\xbf\xbf", false},
	{"6.10.3 FD", "\xfd\xbf\xbf\xbf\xbf\xbf", false},
	{"6.11.1 U+D7FF", "\xed\x9f\xbf", true},
	{"6.11.2 U+E000", "\xee\x80\x80", true},
	{"6.11.3 U+FFFD", "\xef\xbf\xbd", true},
	{"6.11.4 U+10FFFF", "\xf4\x8f\xbf\xbf", true},
	{"6.11.5 U+110000", "\xf4\x90\x80\x80", false},
	{"F5 lead", "\xf5\x80\x80\x80", false},
	{"6.12.1 lone 80", "\x80", false},
	{"6.12.2 lone BF", "\xbf", false},
	{"6.12.3 80 BF", "\x80\xbf", false},
	{"6.12.8 continuations after ASCII", "ab\x80\xbf\x80\xbf", false},
	{"6.13.1 C0 space", "\xc0 ", false},
	{"6.13.2 E0 space", "\xe0 ", false},
	{"6.13.3 F0 space", "\xf0 ", false},
	{"6.13.4 F8 space", "\xf8 ", false},
	{"6.13.5 FC space", "\xfc ", false},
	{"6.14.1 C0 missing last", "\xc0", false},
	{"6.14.2 E0 80 missing last", "\xe0\x80", false},
	{"6.14.3 F0 80 80 missing last", "\xf0\x80\x80", false},
	{"6.14.6 DF missing last", "\xdf", false},
	{"6.14.7 EF BF missing last", "\xef\xbf", false},
	{"6.14.8 F7 BF BF missing last", "\xf7\xbf\xbf", false},
	{"6.14.x F4 8F BF missing last", "\xf4\x8f\xbf", false},
	{"6.15 concatenated incompletes", "\xc0\xe0\x80\xf0\x80\x80\xf8\x80\x80\x80\xfc\x80\x80\x80\x80\xdf\xef\xbf\xf7\xbf\xbf\xfb\xbf\xbf\xbf\xfd\xbf\xbf\xbf\xbf", false},
	{"6.16.1 FE", "\xfe", false},
	{"6.16.2 FF", "\xff", false},
	{"6.16.3 FE FE FF FF", "\xfe\xfe\xff\xff", false},
	{"6.17.1 overlong / 2-byte", "\xc0\xaf", false},
	{"6.17.2 overlong / 3-byte", "\xe0\x80\xaf", false},
	{"6.17.3 overlong / 4-byte", "\xf0\x80\x80\xaf", false},
	{"6.18.1 max overlong C1 BF", "\xc1\xbf", false},
	{"6.18.2 max overlong E0 9F BF", "\xe0\x9f\xbf", false},
	{"6.18.3 max overlong F0 8F BF BF", "\xf0\x8f\xbf\xbf", false},
	{"6.19.1 overlong NUL 2", "\xc0\x80", false},
	{"6.19.2 overlong NUL 3", "\xe0\x80\x80", false},
	{"6.19.3 overlong NUL 4", "\xf0\x80\x80\x80", false},
	{"6.20.1 U+D800", "\xed\xa0\x80", false},
	{"6.20.2 U+DB7F", "\xed\xad\xbf", false},
	{"6.20.3 U+DB80", "\xed\xae\x80", false},
	{"6.20.4 U+DBFF", "\xed\xaf\xbf", false},
	{"6.20.5 U+DC00", "\xed\xb0\x80", false},
	{"6.20.6 U+DF80", "\xed\xbe\x80", false},
	{"6.20.7 U+DFFF", "\xed\xbf\xbf", false},
	{"6.21.1 paired surrogates", "\xed\xa0\x80\xed\xb0\x80", false},
	{"6.21.8 paired surrogates", "\xed\xaf\xbf\xed\xbf\xbf", false},
	{"6.22.1 U+FFFE", "\xef\xbf\xbe", true},
	{"6.22.2 U+FFFF", "\xef\xbf\xbf", true},
	{"6.22.3 U+1FFFE", "\xf0\x9f\xbf\xbe", true},
	{"6.22.34 U+10FFFE", "\xf4\x8f\xbf\xbe", true},
	{"6.23.1 U+FFFD", "\xef\xbf\xbd", true},
	{"6.23.7 text with U+FFFD", "\x65\x64\x69\x74\x65\x64\xef\xbf\xbd", true},
	{"long ASCII then 2-byte", "0123456789abcdefghijκ", true},
	{"long ASCII then bad", "0123456789abcdefghij\xff", false},
	{"emoji run", "😀😁😂🤣😃😄😅😆", true},
}

// TestUTF8Validator checks each case whole, byte by byte and cut in two
// at every point (fail-fast at the piece holding the first bad byte).
func TestUTF8Validator(t *testing.T) {
	for _, c := range utf8Cases {
		t.Run(c.name, func(t *testing.T) {
			if utf8.ValidString(c.in) != c.valid {
				t.Fatalf("table says valid=%v, utf8.Valid disagrees", c.valid)
			}
			checkAllSplits(t, []byte(c.in))
			// After a prefix of valid multi-byte text, too.
			checkAllSplits(t, append([]byte("κόσμε "), c.in...))
		})
	}
}

// TestUTF8ValidatorReset: Reset forgets a cut character.
func TestUTF8ValidatorReset(t *testing.T) {
	var v UTF8Validator
	if !v.Write([]byte{0xE2, 0x82}) || v.Complete() {
		t.Fatal("cut character not pending")
	}
	v.Reset()
	if !v.Complete() || !v.Write([]byte("a")) {
		t.Fatal("Reset did not clear the pending character")
	}
}

// TestUTF8ValidatorRandom is the property test: random inputs, biased
// towards UTF-8 structure, split at random points, agree with utf8.Valid
// and fail at the first bad piece.
func TestUTF8ValidatorRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte{0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF}
	runes := []rune{'a', 'µ', 'κ', '€', 0xFFFD, 0xD7FF, 0xE000, 0x10000, 0x1F600, 0x10FFFF}
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for i := 0; i < n; i++ {
		var p []byte
		for l := rng.Intn(24); l > 0; l-- {
			switch rng.Intn(3) {
			case 0:
				p = append(p, alphabet[rng.Intn(len(alphabet))])
			case 1:
				p = utf8.AppendRune(p, runes[rng.Intn(len(runes))])
			default:
				p = append(p, byte(rng.Intn(256)))
			}
		}
		var cuts []int
		for c := rng.Intn(4); c > 0 && len(p) > 0; c-- {
			cuts = append(cuts, rng.Intn(len(p)+1))
		}
		sortInts(cuts)
		checkSplit(t, p, cuts)
	}
	// Valid text only: long runs of mixed widths, so that the ASCII fast
	// path and cut characters at chunk ends are exercised.
	for i := 0; i < 2000; i++ {
		var p []byte
		for l := rng.Intn(200); l > 0; l-- {
			if rng.Intn(2) == 0 {
				p = append(p, "abcdefgh"[rng.Intn(8)])
			} else {
				p = utf8.AppendRune(p, runes[rng.Intn(len(runes))])
			}
		}
		var v UTF8Validator
		for len(p) > 0 {
			k := rng.Intn(len(p) + 1)
			if !v.Write(p[:k]) {
				t.Fatalf("valid text rejected")
			}
			p = p[k:]
		}
		if !v.Complete() {
			t.Fatal("valid text not complete")
		}
	}
}

func sortInts(a []int) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

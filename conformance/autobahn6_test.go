package conformance

import (
	"fmt"
	"testing"
	"unicode/utf8"
)

// utf8Seq is one entry of the UTF-8 sequence tables of Autobahn 6.5-6.23,
// which follow Markus Kuhn's UTF-8 decoder stress test.
type utf8Seq struct {
	valid bool
	s     string
}

// utf8Groups lists Autobahn's 6.5-6.23 groups in order; group i becomes
// case 6.(5+i).j. Validity is that of RFC 3629 (which RFC 6455 §8.1 points
// to): no overlong forms, no surrogates, nothing above U+10FFFF, and the
// noncharacters U+FFFE, U+FFFF etc. are valid.
func utf8Groups() [][]utf8Seq {
	v := func(ss ...string) []utf8Seq {
		r := make([]utf8Seq, len(ss))
		for i, s := range ss {
			r[i] = utf8Seq{true, s}
		}
		return r
	}
	inv := func(ss ...string) []utf8Seq {
		r := make([]utf8Seq, len(ss))
		for i, s := range ss {
			r[i] = utf8Seq{false, s}
		}
		return r
	}
	kosme := "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5" // "κόσμε"

	// 6.6: every prefix of κόσμε; those that end inside a character are
	// invalid as a whole message (§8.1 applies to the complete message).
	var prefixes []utf8Seq
	for i := 1; i <= len(kosme); i++ {
		prefixes = append(prefixes, utf8Seq{utf8.ValidString(kosme[:i]), kosme[:i]})
	}

	// 6.12.8: all 64 continuation bytes; 6.13.x: lonely start bytes,
	// each followed by a space.
	var conts []byte
	for b := 0x80; b <= 0xbf; b++ {
		conts = append(conts, byte(b))
	}
	lonely := func(from, to int) string {
		var s []byte
		for b := from; b <= to; b++ {
			s = append(s, byte(b), ' ')
		}
		return string(s)
	}
	missingLast := []string{
		"\xc0", "\xe0\x80", "\xf0\x80\x80", "\xf8\x80\x80\x80", "\xfc\x80\x80\x80\x80",
		"\xdf", "\xef\xbf", "\xf7\xbf\xbf", "\xfb\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf",
	}
	concat := ""
	for _, s := range missingLast {
		concat += s
	}
	// 6.22: the noncharacters U+FFFE and U+FFFF of every plane, which are
	// valid UTF-8.
	var nonchars []string
	for plane := rune(0); plane <= 16; plane++ {
		for _, low := range []rune{0xFFFE, 0xFFFF} {
			nonchars = append(nonchars, string(utf8.AppendRune(nil, plane<<16|low)))
		}
	}

	return [][]utf8Seq{
		// 6.5 some valid sequences
		v(kosme, "\xf0\x9d\x84\x9e", "Hello\x00World", "\xe2\x82\xac \xc2\xa3 \xe6\x97\xa5\xe6\x9c\xac", "\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80"),
		// 6.6 prefixes of κόσμε
		prefixes,
		// 6.7 first possible sequence of each length
		v("\x00", "\xc2\x80", "\xe0\xa0\x80", "\xf0\x90\x80\x80"),
		// 6.8 first possible 5- and 6-byte sequences (not UTF-8 any more)
		inv("\xf8\x88\x80\x80\x80", "\xfc\x84\x80\x80\x80\x80"),
		// 6.9 last possible sequence of each length
		v("\x7f", "\xdf\xbf", "\xef\xbf\xbf", "\xf4\x8f\xbf\xbf"),
		// 6.10 last possible 4-, 5-, 6-byte forms beyond U+10FFFF
		inv("\xf7\xbf\xbf\xbf", "\xfb\xbf\xbf\xbf\xbf", "\xfd\xbf\xbf\xbf\xbf\xbf"),
		// 6.11 other boundary conditions
		append(v("\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbd", "\xf4\x8f\xbf\xbf"), inv("\xf4\x90\x80\x80")...),
		// 6.12 unexpected continuation bytes
		inv("\x80", "\xbf", "\x80\xbf", "\x80\xbf\x80", "\x80\xbf\x80\xbf", "\x80\xbf\x80\xbf\x80", "\x80\xbf\x80\xbf\x80\xbf", string(conts)),
		// 6.13 lonely start bytes
		inv(lonely(0xc0, 0xdf), lonely(0xe0, 0xef), lonely(0xf0, 0xf7), lonely(0xf8, 0xfb), lonely(0xfc, 0xfd)),
		// 6.14 sequences with the last continuation byte missing
		inv(missingLast...),
		// 6.15 concatenation of incomplete sequences
		inv(concat),
		// 6.16 impossible bytes
		inv("\xfe", "\xff", "\xfe\xfe\xff\xff"),
		// 6.17 overlong ASCII '/'
		inv("\xc0\xaf", "\xe0\x80\xaf", "\xf0\x80\x80\xaf", "\xf8\x80\x80\x80\xaf", "\xfc\x80\x80\x80\x80\xaf"),
		// 6.18 maximum overlong sequences
		inv("\xc1\xbf", "\xe0\x9f\xbf", "\xf0\x8f\xbf\xbf", "\xf8\x87\xbf\xbf\xbf", "\xfc\x83\xbf\xbf\xbf\xbf"),
		// 6.19 overlong NUL
		inv("\xc0\x80", "\xe0\x80\x80", "\xf0\x80\x80\x80", "\xf8\x80\x80\x80\x80", "\xfc\x80\x80\x80\x80\x80"),
		// 6.20 single UTF-16 surrogates
		inv("\xed\xa0\x80", "\xed\xad\xbf", "\xed\xae\x80", "\xed\xaf\xbf", "\xed\xb0\x80", "\xed\xbe\x80", "\xed\xbf\xbf"),
		// 6.21 paired UTF-16 surrogates
		inv("\xed\xa0\x80\xed\xb0\x80", "\xed\xa0\x80\xed\xbf\xbf", "\xed\xad\xbf\xed\xb0\x80", "\xed\xad\xbf\xed\xbf\xbf",
			"\xed\xae\x80\xed\xb0\x80", "\xed\xae\x80\xed\xbf\xbf", "\xed\xaf\xbf\xed\xb0\x80", "\xed\xaf\xbf\xed\xbf\xbf"),
		// 6.22 noncharacters
		v(nonchars...),
		// 6.23 specials
		v("\xef\xbf\xb9", "\xef\xbf\xba", "\xef\xbf\xbb", "\xef\xbf\xbc", "\xef\xbf\xbd", "\xef\xbf\xbe", "\xef\xbf\xbf"),
	}
}

// TestUTF8Table checks the table above against the standard library's
// RFC 3629 decoder, so a typo in an expectation cannot pass silently.
func TestUTF8Table(t *testing.T) {
	for g, group := range utf8Groups() {
		for i, s := range group {
			if s.valid != utf8.ValidString(s.s) {
				t.Errorf("6.%d.%d %q: table says valid=%v, utf8.ValidString says %v", g+5, i+1, s.s, s.valid, !s.valid)
			}
		}
	}
}

// TestUTF8 is Autobahn section 6: text messages must be valid UTF-8 and an
// endpoint that receives invalid UTF-8 fails the connection with 1007
// (§8.1, §5.6, §7.4.1), as soon as the invalid byte arrives, even in the
// middle of a frame or a fragmented message; a code point split across
// fragments is fine because validity is a property of the whole message.
func TestUTF8(t *testing.T) {
	hello := "Hello-\xc2\xb5@\xc3\x9f\xc3\xb6\xc3\xa4\xc3\xbc\xc3\xa0\xc3\xa1-UTF-8!!" // "Hello-µ@ßöäüàá-UTF-8!!"
	kosme := "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5"
	edited := kosme + "\xed\xa0\x80edited" // a UTF-16 surrogate in the middle

	// oneByteFrames splits s into a fragmented message of 1-byte frames,
	// most of which end in the middle of a code point.
	oneByteFrames := func(s string) []frame {
		fs := make([]frame, len(s))
		for i := 0; i < len(s); i++ { // bytes, not runes
			op := opCont
			if i == 0 {
				op = opText
			}
			fs[i] = frag(op, i == len(s)-1, s[i:i+1])
		}
		return fs
	}
	// cut is where hello splits on a code point boundary (after "µ").
	cut := len("Hello-\xc2\xb5")

	cases := []wsCase{
		{id: "6.1.1", doc: "empty text message is echoed",
			send: send(text("")), want: []frame{text("")}},
		{id: "6.1.2", doc: "text message of three empty fragments is echoed as one empty message (§5.4)",
			send: send(frag(opText, false, ""), frag(opCont, false, ""), frag(opCont, true, "")), want: []frame{text("")}},
		{id: "6.1.3", doc: "empty, non-empty, empty fragments are echoed as one message (§5.4)",
			send: send(frag(opText, false, ""), frag(opCont, false, "middle frame payload"), frag(opCont, true, "")),
			want: []frame{text("middle frame payload")}},
		{id: "6.2.1", doc: "valid UTF-8 with 2-byte characters in one frame is echoed",
			send: send(text(hello)), want: []frame{text(hello)}},
		{id: "6.2.2", doc: "valid UTF-8 in two fragments cut on a code point boundary is echoed whole",
			send: send(frag(opText, false, hello[:cut]), frag(opCont, true, hello[cut:])), want: []frame{text(hello)}},
		{id: "6.2.3", doc: "valid UTF-8 in 1-byte fragments, cutting code points, is echoed whole (§8.1: validity is per message)",
			send: send(oneByteFrames(hello)...), want: []frame{text(hello)}},
		{id: "6.2.4", doc: "κόσμε (2- and 3-byte characters) in 1-byte fragments is echoed whole",
			send: send(oneByteFrames(kosme)...), want: []frame{text(kosme)}},
		{id: "6.3.1", doc: "text with a UTF-16 surrogate encoded in UTF-8 fails with 1007 (§8.1)",
			send: send(text(edited)), close: closeInvalidData},
		{id: "6.3.2", doc: "the same in 1-byte fragments fails with 1007 (§8.1)",
			send: send(oneByteFrames(edited)...), close: closeInvalidData},

		// 6.4: fail fast. The invalid bytes arrive in the second part of
		// three; the server must close before the third is sent (§8.1:
		// "the endpoint MUST _Fail the WebSocket Connection_" when it
		// receives invalid UTF-8, not when the message ends).
		{id: "6.4.1", doc: "fragment 2 of 3 holds a code point above U+10FFFF: 1007 before fragment 3 is sent",
			send: send(frag(opText, false, kosme), frag(opCont, false, "\xf4\x90\x80\x80")),
			rest: send(frag(opCont, true, "edited")), close: closeInvalidData, failFast: true},
		{id: "6.4.2", doc: "fragment 1 ends with the lead byte 0xF4, fragment 2 continues it above U+10FFFF: 1007 before fragment 3",
			send: send(frag(opText, false, kosme+"\xf4"), frag(opCont, false, "\x90\x80\x80")),
			rest: send(frag(opCont, true, "edited")), close: closeInvalidData, failFast: true},
	}
	// 6.4.3/6.4.4: one frame whose header announces the whole payload;
	// the payload arrives in three writes and the second is invalid.
	p := kosme + "\xf4\x90\x80\x80" + "edited"
	w := splitPayload(text(p), len(kosme), len(kosme)+4)
	cases = append(cases, wsCase{id: "6.4.3",
		doc:  "one frame in three writes, the 2nd holds a code point above U+10FFFF: 1007 before the 3rd write",
		send: w[:2], rest: w[2:], close: closeInvalidData, failFast: true})
	w = splitPayload(text(p), len(kosme)+1, len(kosme)+2)
	cases = append(cases, wsCase{id: "6.4.4",
		doc:  "one frame in three writes, the 1st ends with 0xF4 and the 2nd is the byte 0x90 that makes it invalid: 1007 before the 3rd",
		send: w[:2], rest: w[2:], close: closeInvalidData, failFast: true})

	// Not in Autobahn, but the same rule: a code point split across two
	// fragments and across two writes of one frame is fine.
	euro := "price: \xe2\x82\xac 5"
	split := len("price: \xe2")
	cases = append(cases,
		wsCase{id: "6.4.5", doc: "(extra) a 3-byte code point split across two fragments is valid and echoed whole",
			send: send(frag(opText, false, euro[:split]), frag(opCont, true, euro[split:])), want: []frame{text(euro)}},
		wsCase{id: "6.4.6", doc: "(extra) a 3-byte code point split across two writes of one frame is valid and echoed",
			send: splitPayload(text(euro), split, split+1), want: []frame{text(euro)}},
		wsCase{id: "6.4.7", doc: "(extra) a message ending in the middle of a code point fails with 1007 when its last fragment arrives",
			send: send(frag(opText, false, "abc"), frag(opCont, true, "\xe2\x82")), close: closeInvalidData},
	)

	for g, group := range utf8Groups() {
		for i, s := range group {
			c := wsCase{id: fmt.Sprintf("6.%d.%d", g+5, i+1), send: send(text(s.s))}
			if s.valid {
				c.doc = fmt.Sprintf("valid UTF-8 %q is echoed", s.s)
				c.want = []frame{text(s.s)}
			} else {
				c.doc = fmt.Sprintf("invalid UTF-8 %q fails with 1007 (§8.1)", s.s)
				c.close = closeInvalidData
			}
			cases = append(cases, c)
		}
	}
	runCases(t, cases)
}

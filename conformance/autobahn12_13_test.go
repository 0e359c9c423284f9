package conformance

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/wsloop/wsloop/engine"
)

// This file is Autobahn sections 12 and 13: permessage-deflate (RFC 7692).
// Section 12 echoes compressed messages of many sizes and kinds with the
// default offer; section 13 does the same under each parameter combination
// a client can offer. The client below compresses with compress/flate,
// keeps or drops its context as negotiated, and checks every frame the
// server sends against RFC 7692 §6 (RSV1 on the first frame of a compressed
// message only) and every echo byte for byte after decompressing it with
// the server's negotiated context. Strict: a wrong response parameter, a
// stray RSV bit or a server message that needs a window it promised not to
// use fails the test.

// pmdParams is a parsed permessage-deflate response.
type pmdParams struct {
	serverNoCtx, clientNoCtx bool
	serverBits, clientBits   int // 0 when absent
	raw                      string
}

// parsePMDResponse parses the Sec-WebSocket-Extensions values of a 101
// response and checks them against the offers the client made (RFC 7692
// §7.1: a client must fail the connection on a response it cannot accept).
// It returns nil params when the server declined.
func parsePMDResponse(values []string, offers []string) (*pmdParams, error) {
	if len(values) == 0 {
		return nil, nil
	}
	if len(values) > 1 || strings.Contains(values[0], ",") {
		return nil, fmt.Errorf("server accepted more than one extension: %q (RFC 7692 §5: at most one)", values)
	}
	parts := strings.Split(values[0], ";")
	if strings.TrimSpace(parts[0]) != "permessage-deflate" {
		return nil, fmt.Errorf("server answered unoffered extension %q", values[0])
	}
	p := &pmdParams{raw: values[0]}
	seen := map[string]bool{}
	for _, part := range parts[1:] {
		k, v, hasV := strings.Cut(strings.TrimSpace(part), "=")
		if seen[k] {
			return nil, fmt.Errorf("parameter %s repeated in %q (RFC 7692 §7)", k, values[0])
		}
		seen[k] = true
		bits := func() (int, error) {
			n, err := strconv.Atoi(strings.Trim(v, `"`))
			if !hasV || err != nil || n < 8 || n > 15 {
				return 0, fmt.Errorf("bad %s value %q (§7.1.2)", k, v)
			}
			return n, nil
		}
		var err error
		switch k {
		case "server_no_context_takeover":
			p.serverNoCtx = true
		case "client_no_context_takeover":
			p.clientNoCtx = true
		case "server_max_window_bits":
			p.serverBits, err = bits()
		case "client_max_window_bits":
			p.clientBits, err = bits()
		default:
			err = fmt.Errorf("unknown parameter %q in the response", k)
		}
		if err != nil {
			return nil, err
		}
	}
	// The response must fit one of the offers (§7.1.1.1, §7.1.2.1,
	// §7.1.2.2).
	var why []string
	for _, o := range offers {
		has := func(name string) (string, bool) {
			for _, part := range strings.Split(o, ";")[1:] {
				k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
				if k == name {
					return v, true
				}
			}
			return "", false
		}
		if _, ok := has("server_no_context_takeover"); ok && !p.serverNoCtx {
			why = append(why, o+": server_no_context_takeover offered but not answered (§7.1.1.1)")
			continue
		}
		if v, ok := has("server_max_window_bits"); ok {
			n, _ := strconv.Atoi(v)
			if p.serverBits == 0 || p.serverBits > n {
				why = append(why, o+": server_max_window_bits not answered with the same or a smaller value (§7.1.2.1)")
				continue
			}
		}
		if v, ok := has("client_max_window_bits"); !ok && p.clientBits != 0 {
			why = append(why, o+": client_max_window_bits answered but not offered (§7.1.2.2)")
			continue
		} else if n, err := strconv.Atoi(v); ok && err == nil && p.clientBits > n {
			why = append(why, o+": client_max_window_bits larger than offered (§7.1.2.2)")
			continue
		}
		return p, nil
	}
	return nil, fmt.Errorf("response %q fits no offer: %s", values[0], strings.Join(why, "; "))
}

// pmdClient is a permessage-deflate client over the raw conformance client.
type pmdClient struct {
	*client
	params *pmdParams // nil: not negotiated

	// Compression of client messages: one writer kept across messages
	// unless the server answered client_no_context_takeover.
	fw  *flate.Writer
	fwb bytes.Buffer
	// Decompression of server messages: the window of the previous
	// ones unless the server uses no context takeover.
	hist []byte
	fr   io.ReadCloser
}

// dialPMD connects, offers the given Sec-WebSocket-Extensions values (one
// header line each) and checks the 101 response, extension included.
func dialPMD(t testing.TB, addr string, offers ...string) (*pmdClient, error) {
	conn, err := dialNet(&net.Dialer{Timeout: 5 * time.Second}, addr)
	if err != nil {
		return nil, err
	}
	c := &pmdClient{client: &client{t: t, conn: conn, br: newReader(conn)}}
	var extra []string
	var all []string
	for _, o := range offers {
		extra = append(extra, "Sec-WebSocket-Extensions: "+o)
		for _, one := range strings.Split(o, ",") {
			all = append(all, strings.TrimSpace(one))
		}
	}
	req, accept := handshakeRequest(addr, extra...)
	if _, err := conn.Write(req); err != nil {
		conn.Close()
		return nil, err
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer conn.SetReadDeadline(time.Time{})
	status, err := c.br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 101 ") {
		conn.Close()
		return nil, fmt.Errorf("status %q, %v", status, err)
	}
	var ext []string
	gotAccept := ""
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			conn.Close()
			return nil, err
		}
		line = strings.TrimSuffix(line, "\r\n")
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ":")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "sec-websocket-extensions":
			ext = append(ext, strings.TrimSpace(v))
		case "sec-websocket-accept":
			gotAccept = strings.TrimSpace(v)
		}
	}
	if gotAccept != accept {
		conn.Close()
		return nil, fmt.Errorf("Sec-WebSocket-Accept %q, want %q", gotAccept, accept)
	}
	if c.params, err = parsePMDResponse(ext, all); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// compress returns msg compressed as RFC 7692 §7.2.1 says: a sync flush
// with its 00 00 ff ff tail removed.
func (c *pmdClient) compress(msg []byte) []byte {
	c.fwb.Reset()
	switch {
	case c.fw == nil && c.params.clientNoCtx:
		c.fw, _ = flate.NewWriter(&c.fwb, flate.BestSpeed)
	case c.fw == nil:
		// Level 6: BestSpeed would not use the context for messages
		// under 128 bytes, the ones takeover is for.
		c.fw, _ = flate.NewWriter(&c.fwb, flate.DefaultCompression)
	case c.params.clientNoCtx:
		// A fresh window per message: the server answered
		// client_no_context_takeover.
		c.fw.Reset(&c.fwb)
	}
	c.fw.Write(msg)
	c.fw.Flush()
	b := c.fwb.Bytes()
	if !bytes.HasSuffix(b, []byte{0, 0, 0xff, 0xff}) {
		panic("flate flush without the 00 00 ff ff tail")
	}
	return append([]byte(nil), b[:len(b)-4]...)
}

// sendMessage sends msg as one message, compressed (RSV1 on the first
// frame only) or not, in frames of fragSize payload bytes (0: one frame).
func (c *pmdClient) sendMessage(op byte, msg []byte, compressed bool, fragSize int) []byte {
	payload := msg
	var rsv byte
	if compressed {
		payload, rsv = c.compress(msg), rsv1
	}
	if fragSize <= 0 || len(payload) <= fragSize {
		return encodeFrame(frame{fin: true, rsv: rsv, op: op, payload: payload})
	}
	var out []byte
	for i := 0; i < len(payload); i += fragSize {
		end := min(i+fragSize, len(payload))
		f := frame{fin: end == len(payload), op: opCont, payload: payload[i:end]}
		if i == 0 {
			f.op, f.rsv = op, rsv
		}
		out = append(out, encodeFrame(f)...)
	}
	return out
}

// readPMDFrame reads one server frame with the checks of readFrame, except
// that RSV1 is allowed where RFC 7692 §6 allows it; the caller checks that
// it is on a first data frame.
func (c *pmdClient) readPMDFrame(timeout time.Duration) (frame, error) {
	return c.readFrameExt(timeout, c.params != nil)
}

// readPMDMessage reads the next message, reassembled and decompressed, or
// a control frame. compressed reports whether the server compressed it.
func (c *pmdClient) readPMDMessage(timeout time.Duration) (f frame, compressed bool, err error) {
	f, err = c.readPMDFrame(timeout)
	if err != nil || f.op >= opClose {
		return f, false, err
	}
	if f.op == opCont {
		return f, false, errors.New("continuation frame without a message (§5.4)")
	}
	compressed = f.rsv == rsv1
	for !f.fin {
		g, err := c.readPMDFrame(timeout)
		if err != nil {
			return f, compressed, err
		}
		if g.op != opCont {
			return f, compressed, fmt.Errorf("%v inside a fragmented message", g)
		}
		f.payload = append(f.payload, g.payload...)
		f.fin = g.fin
	}
	f.rsv = 0
	if compressed {
		var dict []byte
		if !c.params.serverNoCtx {
			dict = c.hist
		}
		// RFC 7692 §7.2.2: append 00 00 ff ff; a final empty block
		// after it ends the stream for io.ReadAll.
		src := io.MultiReader(bytes.NewReader(f.payload), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff}))
		if c.fr == nil {
			c.fr = flate.NewReaderDict(src, dict)
		} else {
			c.fr.(flate.Resetter).Reset(src, dict)
		}
		out, err := io.ReadAll(c.fr)
		if err != nil {
			return f, true, fmt.Errorf("server's compressed message does not inflate: %v", err)
		}
		if b := c.params.serverBits; b > 0 && b < 15 && len(out) > 1<<b {
			// With no context takeover, a message of at most 2^N
			// bytes cannot reference further back than 2^N. A longer
			// one could, and this client cannot tell, so the server
			// must not send it compressed (§7.1.2.1).
			return f, true, fmt.Errorf("server compressed a %d-byte message under server_max_window_bits=%d", len(out), b)
		}
		f.payload = out
		c.hist = append(c.hist, out...)
		if len(c.hist) > 1<<15 {
			c.hist = append([]byte(nil), c.hist[len(c.hist)-1<<15:]...)
		}
	}
	if f.op == opText && !utf8.Valid(f.payload) {
		return f, compressed, errors.New("server sent a text message that is not UTF-8 (§8.1)")
	}
	return f, compressed, nil
}

// closePMD runs the client-initiated close handshake.
func (c *pmdClient) closePMD() error {
	if err := c.writeFrame(closeFrame(closeNormal, "")); err != nil {
		return err
	}
	f, _, err := c.readPMDMessage(readTimeout)
	if err != nil {
		return fmt.Errorf("waiting for the close reply: %w", err)
	}
	if f.op != opClose {
		return fmt.Errorf("got %v, want the close reply", f)
	}
	if code, _, err := parseClose(f); err != nil || code != closeNormal {
		return fmt.Errorf("close reply %d, %v", code, err)
	}
	return c.expectTCPClose(readTimeout)
}

// expectPMDClose reads until the server's close frame and checks its code.
func (c *pmdClient) expectPMDClose(code uint16) error {
	f, _, err := c.readPMDMessage(largeTimeout)
	if err != nil {
		return fmt.Errorf("want close %d, got %v", code, err)
	}
	if f.op != opClose {
		return fmt.Errorf("got %v, want close %d", f, code)
	}
	got, reason, err := parseClose(f)
	if err != nil {
		return err
	}
	if got != code {
		return fmt.Errorf("close %d (%q), want %d", got, reason, code)
	}
	_ = c.writeFrame(closeFrame(got, ""))
	return c.expectTCPClose(readTimeout)
}

// Payload generators for the message kinds of Autobahn 12.1-12.5.
type pmdKind struct {
	name string
	op   byte
	gen  func(rng *rand.Rand, n int) []byte
}

var pmdWords = strings.Fields("the quick brown fox jumps over lazy dog permessage deflate websocket κόσμε frame message window context takeover 日本語 loop")

var pmdKinds = []pmdKind{
	{"text", opText, func(rng *rand.Rand, n int) []byte { // 12.1: compressible text
		var b []byte
		for len(b) < n {
			b = append(b, pmdWords[rng.Intn(len(pmdWords))]...)
			b = append(b, ' ')
		}
		// Cut at a character boundary, pad with ASCII to n bytes.
		b = b[:n]
		for len(b) > 0 && !utf8.Valid(b) {
			b = b[:len(b)-1]
		}
		return append(b, bytes.Repeat([]byte{'.'}, n-len(b))...)
	}},
	{"binary", opBinary, func(rng *rand.Rand, n int) []byte { // 12.2: compressible binary
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Intn(16)) * 17
		}
		return b
	}},
	{"json", opText, func(rng *rand.Rand, n int) []byte { // 12.3: realistic text
		var b []byte
		for len(b) < n {
			b = fmt.Appendf(b, `{"id":%d,"user":"u%d","price":%d.%02d,"tags":["a","b"]}`+"\n", rng.Intn(1e6), rng.Intn(100), rng.Intn(1000), rng.Intn(100))
		}
		return b[:n]
	}},
	{"records", opBinary, func(rng *rand.Rand, n int) []byte { // 12.4: realistic binary
		b := make([]byte, 0, n+16)
		for len(b) < n {
			b = binary.BigEndian.AppendUint32(b, 0xCAFE0001)
			b = binary.BigEndian.AppendUint32(b, uint32(rng.Intn(1000)))
			b = binary.BigEndian.AppendUint64(b, uint64(rng.Intn(1<<20)))
		}
		return b[:n]
	}},
	{"random", opBinary, func(rng *rand.Rand, n int) []byte { // 12.5: incompressible
		b := make([]byte, n)
		rng.Read(b)
		return b
	}},
}

// pmdSizes are the (message size, fragment size) pairs of each Autobahn
// 12.x/13.x subsection: ten sizes unfragmented, then fragmented ones.
var pmdSizes = []struct{ size, frag int }{
	{16, 0}, {64, 0}, {256, 0}, {1024, 0}, {4096, 0}, {8192, 0}, {16384, 0}, {32768, 0}, {65536, 0}, {131072, 0},
	{8192, 256}, {16384, 256}, {32768, 256}, {65536, 256}, {131072, 256}, {65536, 1024}, {65536, 4096}, {131072, 4096},
}

// minCompressedEcho is the smallest message size from which the in-process
// server must compress at least one of its echoes (see TestPerMessageDeflateEcho).
const minCompressedEcho = 128

// pmdCount is how many messages a case echoes: Autobahn sends 1000; here
// a case moves at most 64 KiB each way (and at least 3 messages), 16 KiB
// under -race or -short, where compression is ten times slower and these
// cases were half of the suite's time on three roads. The sizes, not the
// counts, find the bugs: window boundaries, stored-block limits, fragment
// splits.
func pmdCount(size int) int {
	moved := 64 << 10
	if testing.Short() || raceEnabled {
		moved = 16 << 10
	}
	return max(3, min(1000, moved/size))
}

// echoRun sends count messages of the kind and size through c, some
// compressed and some not (a client may choose per message, §6), in
// windows of 16 before reading the echoes, and checks each echo byte for
// byte. It returns how many echoes the server compressed.
func echoRun(c *pmdClient, rng *rand.Rand, kind pmdKind, size, frag, count int) (int, error) {
	const window = 16
	compressedEchoes := 0
	for sent := 0; sent < count; {
		var batch [][]byte
		var wire []byte
		for i := 0; i < window && sent < count; i++ {
			msg := kind.gen(rng, size)
			compress := c.params != nil && sent%8 != 7 // every eighth one plain
			wire = append(wire, c.sendMessage(kind.op, msg, compress, frag)...)
			batch = append(batch, msg)
			sent++
		}
		if err := c.write(wire, 0); err != nil {
			return compressedEchoes, fmt.Errorf("write: %w", err)
		}
		for i, want := range batch {
			got, compressed, err := c.readPMDMessage(largeTimeout)
			if err != nil {
				return compressedEchoes, fmt.Errorf("echo %d: %w", sent-len(batch)+i, err)
			}
			if got.op != kind.op || !bytes.Equal(got.payload, want) {
				return compressedEchoes, fmt.Errorf("echo %d: got %v, want %d bytes op %#x", sent-len(batch)+i, got, len(want), kind.op)
			}
			if compressed {
				compressedEchoes++
			}
		}
	}
	return compressedEchoes, nil
}

// startDeflateEcho starts an echo server with opts (deflate enabled by the
// caller), honouring opts.MaxMessageSize, or returns the external address.
func startDeflateEcho(t *testing.T, opts engine.Options) string {
	t.Helper()
	if addrFromEnv() {
		return startEcho(t, opts)
	}
	return serveEcho(t, newEchoHandler(), opts)
}

// deflateOpts is the server configuration of section 12: permessage-deflate
// on, every message compressed whatever its size (Threshold -1) so that the
// server's compressor is exercised at every size, and a large message limit.
func deflateOpts(budget int64) engine.Options {
	return engine.Options{
		MaxMessageSize: 64 << 20,
		Deflate:        engine.Deflate{Enabled: true, Threshold: -1, ContextTakeoverBudget: budget},
	}
}

// TestPerMessageDeflateEcho is Autobahn section 12: messages of five kinds
// (12.1 text, 12.2 binary, 12.3 realistic text, 12.4 realistic binary,
// 12.5 incompressible) and 18 size/fragmentation combinations, compressed,
// echoed and verified, with the default offer "permessage-deflate;
// client_max_window_bits". It runs against a server without context
// takeover (the default) and one with a takeover budget, where client and
// server both keep their windows across messages.
func TestPerMessageDeflateEcho(t *testing.T) {
	skipOnBridge(t)
	for _, srv := range []struct {
		name   string
		budget int64
	}{{"no-takeover", 0}, {"takeover", 64 << 20}} {
		t.Run(srv.name, func(t *testing.T) {
			addr := startDeflateEcho(t, deflateOpts(srv.budget))
			for k, kind := range pmdKinds {
				for s, sz := range pmdSizes {
					id := fmt.Sprintf("12.%d.%d", k+1, s+1)
					t.Run(id, func(t *testing.T) {
						c, err := dialPMD(t, addr, "permessage-deflate; client_max_window_bits")
						if err != nil {
							t.Fatal(err)
						}
						defer c.Close()
						if c.params == nil {
							t.Fatal("server declined the default offer")
						}
						if !addrFromEnv() {
							want := "permessage-deflate"
							if srv.budget == 0 {
								want += "; server_no_context_takeover; client_no_context_takeover"
							}
							if c.params.raw != want {
								t.Fatalf("response %q, want %q", c.params.raw, want)
							}
						}
						rng := rand.New(rand.NewSource(int64(k*100 + s)))
						n, err := echoRun(c, rng, kind, sz.size, sz.frag, pmdCount(sz.size))
						if err != nil {
							t.Fatalf("%s (%s, %d bytes, fragments of %d): %v", id, kind.name, sz.size, sz.frag, err)
						}
						// Under 128 bytes the server's compressor (the
						// fast levels of klauspost/compress/flate) uses
						// Huffman codes alone, which at 16 and 64 bytes
						// does not beat the plain message: the server then
						// rightly sends it plain (RFC 7692 §6).
						if n == 0 && kind.name != "random" && sz.size >= minCompressedEcho && !addrFromEnv() {
							t.Fatalf("%s: the server compressed none of its echoes", id)
						}
						if err := c.closePMD(); err != nil {
							t.Fatal(err)
						}
					})
				}
			}
		})
	}
}

// TestPerMessageDeflateParams is Autobahn section 13: the text messages of
// 12.1 under every offer of 13.1-13.7 (server_no_context_takeover and
// server_max_window_bits of 8 and 15, alone, together and as a list of
// fallbacks; each offer also carries client_no_context_takeover and
// client_max_window_bits as Autobahn's does), plus the same without the
// client parameters so that the client keeps its context. The response is
// checked against the offer (RFC 7692 §7.1) and, for the in-process server,
// exactly.
func TestPerMessageDeflateParams(t *testing.T) {
	skipOnBridge(t)
	const (
		pmd  = "permessage-deflate"
		cli  = "; client_no_context_takeover; client_max_window_bits"
		nctx = "; server_no_context_takeover; client_no_context_takeover"
	)
	type pcase struct {
		offer          string
		want, wantTake string // response without / with a takeover budget
	}
	sections := []pcase{
		{pmd + cli, pmd + nctx, pmd + "; client_no_context_takeover"},                                                                                                   // 13.1
		{pmd + cli + "; server_no_context_takeover", pmd + nctx, pmd + nctx},                                                                                            // 13.2
		{pmd + cli + "; server_max_window_bits=8", pmd + nctx + "; server_max_window_bits=8", pmd + nctx + "; server_max_window_bits=8"},                                // 13.3
		{pmd + cli + "; server_max_window_bits=15", pmd + nctx + "; server_max_window_bits=15", pmd + "; client_no_context_takeover; server_max_window_bits=15"},        // 13.4
		{pmd + cli + "; server_no_context_takeover; server_max_window_bits=8", pmd + nctx + "; server_max_window_bits=8", pmd + nctx + "; server_max_window_bits=8"},    // 13.5
		{pmd + cli + "; server_no_context_takeover; server_max_window_bits=15", pmd + nctx + "; server_max_window_bits=15", pmd + nctx + "; server_max_window_bits=15"}, // 13.6
		{pmd + cli + "; server_no_context_takeover; server_max_window_bits=8, " + pmd + cli + "; server_no_context_takeover, " + pmd + cli, // 13.7
			pmd + nctx + "; server_max_window_bits=8", pmd + nctx + "; server_max_window_bits=8"},
		// Beyond Autobahn: the client keeps its context.
		{pmd, pmd + nctx, pmd},
		{pmd + "; server_max_window_bits=9", pmd + nctx + "; server_max_window_bits=9", pmd + "; server_no_context_takeover; server_max_window_bits=9"},
	}
	sizes := []struct{ size, frag int }{{16, 0}, {64, 0}, {256, 0}, {1024, 0}, {4096, 0}, {32768, 0}, {131072, 0}, {65536, 4096}}
	for _, srv := range []struct {
		name   string
		budget int64
	}{{"no-takeover", 0}, {"takeover", 64 << 20}} {
		t.Run(srv.name, func(t *testing.T) {
			addr := startDeflateEcho(t, deflateOpts(srv.budget))
			for i, pc := range sections {
				for s, sz := range sizes {
					id := fmt.Sprintf("13.%d.%d", i+1, s+1)
					t.Run(id, func(t *testing.T) {
						c, err := dialPMD(t, addr, pc.offer)
						if err != nil {
							t.Fatal(err)
						}
						defer c.Close()
						if c.params == nil {
							t.Fatalf("server declined %q", pc.offer)
						}
						want := pc.want
						if srv.budget > 0 {
							want = pc.wantTake
						}
						if !addrFromEnv() && c.params.raw != want {
							t.Fatalf("offer %q: response %q, want %q", pc.offer, c.params.raw, want)
						}
						rng := rand.New(rand.NewSource(int64(i*100 + s)))
						n, err := echoRun(c, rng, pmdKinds[0], sz.size, sz.frag, pmdCount(sz.size)/2)
						if err != nil {
							t.Fatalf("%s: %v", id, err)
						}
						if n == 0 && !addrFromEnv() && sz.size >= minCompressedEcho && (c.params.serverBits == 0 || c.params.serverBits == 15 || sz.size <= 1<<c.params.serverBits) {
							t.Fatalf("%s: the server compressed none of its echoes", id)
						}
						if err := c.closePMD(); err != nil {
							t.Fatal(err)
						}
					})
				}
			}
		})
	}
}

// TestPerMessageDeflateDeclined: offers RFC 7692 §5 says to decline get a
// response without the extension, and the connection then works without
// compression; a compressed frame on it is a protocol error.
func TestPerMessageDeflateDeclined(t *testing.T) {
	addr := startDeflateEcho(t, deflateOpts(0))
	for _, offer := range []string{
		"permessage-deflate; foo",
		"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
		"permessage-deflate; server_max_window_bits=7",
		"permessage-deflate; server_max_window_bits=16",
		"permessage-deflate; server_max_window_bits",
		"permessage-deflate; client_max_window_bits=08",
		"permessage-deflate; client_no_context_takeover=yes",
		"x-webkit-deflate-frame",
	} {
		t.Run(offer, func(t *testing.T) {
			c, err := dialPMD(t, addr, offer)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.params != nil {
				t.Fatalf("server accepted %q with %q", offer, c.params.raw)
			}
			if err := c.writeFrame(text("plain")); err != nil {
				t.Fatal(err)
			}
			if f, _, err := c.readPMDMessage(readTimeout); err != nil || string(f.payload) != "plain" {
				t.Fatalf("echo %v, %v", f, err)
			}
			// RSV1 without the extension (RFC 6455 §5.2).
			if err := c.writeFrame(frame{fin: true, rsv: rsv1, op: opText, payload: []byte{0x0a, 0xc9, 0xc8, 0x2c, 0x56, 0x00, 0x00}}); err != nil {
				t.Fatal(err)
			}
			if err := c.expectPMDClose(closeProtocol); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("fallback to the second offer", func(t *testing.T) {
		c, err := dialPMD(t, addr, "permessage-deflate; foo=bar, permessage-deflate; client_max_window_bits")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if c.params == nil {
			t.Fatal("second offer not accepted")
		}
		if err := c.closePMD(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPerMessageDeflateErrors: the framing and payload rules of a
// compressed message, each with the close code the server must send.
func TestPerMessageDeflateErrors(t *testing.T) {
	if addrFromEnv() {
		t.Skip("needs a server with a 1 MiB message limit")
	}
	opts := deflateOpts(0)
	opts.MaxMessageSize = 1 << 20
	addr := startDeflateEcho(t, opts)

	// bomb is a compressed message of 96 MiB of zeros, made of one
	// compressed MiB repeated: each copy is self-contained and ends on a
	// byte-aligned sync flush, so the copies concatenate.
	var one bytes.Buffer
	w, _ := flate.NewWriter(&one, flate.BestCompression)
	w.Write(make([]byte, 1<<20))
	w.Flush()
	bomb := bytes.Repeat(one.Bytes(), 96)
	bomb = bomb[:len(bomb)-4]

	cases := []struct {
		name string
		send func(c *pmdClient) []byte
		code uint16
	}{
		{"RSV1 on a continuation frame (RFC 7692 §6)", func(c *pmdClient) []byte {
			p := c.compress([]byte("Hello, Hello, Hello"))
			return append(encodeFrame(frame{rsv: rsv1, op: opText, payload: p[:2]}), encodeFrame(frame{fin: true, rsv: rsv1, op: opCont, payload: p[2:]})...)
		}, closeProtocol},
		{"RSV1 on a ping (RFC 7692 §6)", func(c *pmdClient) []byte {
			return encodeFrame(frame{fin: true, rsv: rsv1, op: opPing, payload: []byte("x")})
		}, closeProtocol},
		{"RSV1 on a close frame", func(c *pmdClient) []byte {
			return encodeFrame(frame{fin: true, rsv: rsv1, op: opClose, payload: []byte{0x03, 0xe8}})
		}, closeProtocol},
		{"RSV2 with permessage-deflate", func(c *pmdClient) []byte {
			return encodeFrame(frame{fin: true, rsv: rsv2, op: opText, payload: []byte("x")})
		}, closeProtocol},
		{"compressed text that is not UTF-8 after inflating (RFC 6455 §8.1)", func(c *pmdClient) []byte {
			return c.sendMessage(opText, []byte("\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"), true, 0)
		}, closeInvalidData},
		{"invalid DEFLATE data", func(c *pmdClient) []byte {
			return encodeFrame(frame{fin: true, rsv: rsv1, op: opBinary, payload: []byte{0xff, 0xff, 0xff, 0xff}})
		}, closeInvalidData},
		{"decompression bomb: 96 MiB from 100 KB, limit 1 MiB", func(c *pmdClient) []byte {
			return encodeFrame(frame{fin: true, rsv: rsv1, op: opBinary, payload: bomb})
		}, 1009},
		{"fragmented decompression bomb", func(c *pmdClient) []byte {
			return append(encodeFrame(frame{rsv: rsv1, op: opBinary, payload: bomb[:1000]}), encodeFrame(frame{fin: true, op: opCont, payload: bomb[1000:]})...)
		}, 1009},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialPMD(t, addr, "permessage-deflate")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// A good compressed message first: the error is in what
			// follows, not in the negotiation.
			if err := c.write(c.sendMessage(opText, []byte("fine, fine, fine"), true, 0), 0); err != nil {
				t.Fatal(err)
			}
			if f, _, err := c.readPMDMessage(readTimeout); err != nil || string(f.payload) != "fine, fine, fine" {
				t.Fatalf("echo %v, %v", f, err)
			}
			if err := c.write(tc.send(c), 0); err != nil {
				t.Logf("write: %v (the server may have closed already)", err)
			}
			if err := c.expectPMDClose(tc.code); err != nil {
				t.Fatal(err)
			}
		})
	}
	t.Run("message at the limit after inflating", func(t *testing.T) {
		c, err := dialPMD(t, addr, "permessage-deflate")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := bytes.Repeat([]byte{'a'}, 1<<20)
		if err := c.write(c.sendMessage(opBinary, msg, true, 0), 0); err != nil {
			t.Fatal(err)
		}
		if f, _, err := c.readPMDMessage(largeTimeout); err != nil || !bytes.Equal(f.payload, msg) {
			t.Fatalf("echo of %d bytes: %v", len(f.payload), err)
		}
		if err := c.closePMD(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPerMessageDeflateThreshold: with the default threshold, short echoes
// go uncompressed and long ones compressed, on the same connection.
func TestPerMessageDeflateThreshold(t *testing.T) {
	if addrFromEnv() {
		t.Skip("depends on the server's threshold")
	}
	addr := startDeflateEcho(t, engine.Options{Deflate: engine.Deflate{Enabled: true}})
	c, err := dialPMD(t, addr, "permessage-deflate")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		n    int
		comp bool
	}{{16, false}, {engine.DefaultDeflateThreshold - 1, false}, {engine.DefaultDeflateThreshold, true}, {5000, true}} {
		msg := repeat("threshold ", tc.n)
		if err := c.write(c.sendMessage(opText, msg, true, 0), 0); err != nil {
			t.Fatal(err)
		}
		f, comp, err := c.readPMDMessage(readTimeout)
		if err != nil || !bytes.Equal(f.payload, msg) {
			t.Fatalf("%d bytes: echo %v, %v", tc.n, f, err)
		}
		if comp != tc.comp {
			t.Fatalf("%d-byte echo compressed=%v, want %v", tc.n, comp, tc.comp)
		}
	}
	if err := c.closePMD(); err != nil {
		t.Fatal(err)
	}
}

//go:build !nowsloop

package servers

import (
	"context"
	"crypto/tls"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/wsloop/wsloop/codec"
	"github.com/wsloop/wsloop/engine"
	"github.com/wsloop/wsloop/handler"
)

// wsloop: this repository's engine (gnet/v2 event loops), linked through the
// bench module's replace directive, with default options (the engine's
// defaults are its production settings). Echo writes from inside OnMessage;
// broadcast encodes one PreparedFrame and hands it to Server.BroadcastAll,
// which walks the engine's own per-loop connection lists.
func init() {
	register(Info{
		Name: "wsloop", Module: "github.com/wsloop/wsloop", Version: "(this repository)",
		Notes: "engine.New with default Options, Server.BroadcastAll with a PreparedFrame",
	}, runWsloop)
}

type wsloopHandler struct {
	handler.Base
	srv *engine.Server
}

func (h *wsloopHandler) OnMessage(c handler.Conn, op handler.Op, data []byte) {
	if rest, ok := isBroadcast(op == handler.Text, data); ok {
		// The engine already lists its connections per event loop: no
		// set of our own, no snapshot per broadcast.
		h.srv.BroadcastAll(codec.NewPreparedFrame(codec.OpText, rest))
		return
	}
	_ = c.WriteMessage(op, data)
}

func runWsloop(addr string, set Settings, ready func()) error {
	opts := engine.Options{Addr: addr, EventLoops: set.Loops, ReusePort: set.ReusePort}
	if err := applyOptions(&opts, set.Options); err != nil {
		return err
	}
	if set.TLS != nil {
		// wss:// on the event loops: Options.TLSConfig, everything else
		// (MaxTLSHandshakes included) at its default.
		cert, err := tls.X509KeyPair(set.TLS.CertPEM, set.TLS.KeyPEM)
		if err != nil {
			return err
		}
		opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	h := &wsloopHandler{}
	h.srv = engine.New(h, opts)
	if err := h.srv.Start(context.Background()); err != nil {
		return err
	}
	ready()
	return h.srv.Wait()
}

// applyOptions sets the engine.Options fields named in kv ("Field=Value").
// It works by reflection so that a setting the engine gains later can be
// compared in a bench run (-opt NewField=3) without touching this file.
func applyOptions(o *engine.Options, kv []string) error {
	v := reflect.ValueOf(o).Elem()
	for _, pair := range kv {
		name, val, ok := strings.Cut(pair, "=")
		if !ok {
			return fmt.Errorf("option %q: want Field=Value", pair)
		}
		f := v.FieldByName(name)
		if !f.IsValid() || !f.CanSet() {
			return fmt.Errorf("engine.Options has no settable field %q", name)
		}
		switch {
		case f.Type() == reflect.TypeFor[time.Duration]():
			d, err := time.ParseDuration(val)
			if err != nil {
				return fmt.Errorf("option %s: %w", name, err)
			}
			f.SetInt(int64(d))
		case f.Kind() == reflect.Bool:
			b, err := strconv.ParseBool(val)
			if err != nil {
				return fmt.Errorf("option %s: %w", name, err)
			}
			f.SetBool(b)
		case f.CanInt():
			n, err := strconv.ParseInt(val, 0, 64)
			if err != nil || f.OverflowInt(n) {
				return fmt.Errorf("option %s: bad integer %q", name, val)
			}
			f.SetInt(n)
		case f.CanUint():
			n, err := strconv.ParseUint(val, 0, 64)
			if err != nil || f.OverflowUint(n) {
				return fmt.Errorf("option %s: bad integer %q", name, val)
			}
			f.SetUint(n)
		case f.Kind() == reflect.String:
			f.SetString(val)
		default:
			return fmt.Errorf("option %s: type %s cannot be set from the command line", name, f.Type())
		}
	}
	return nil
}

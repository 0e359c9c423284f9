//go:build !nowsloop

package servers

import (
	"testing"
	"time"

	"github.com/wsloop/wsloop/engine"
)

func TestApplyOptions(t *testing.T) {
	var o engine.Options
	err := applyOptions(&o, []string{"EventLoops=3", "ReusePort=true", "IdleTimeout=90s", "MaxMessageSize=0x100", "Addr=127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	if o.EventLoops != 3 || !o.ReusePort || o.IdleTimeout != 90*time.Second || o.MaxMessageSize != 256 || o.Addr != "127.0.0.1:1" {
		t.Fatalf("applied wrongly: %+v", o)
	}
	for _, bad := range []string{"NoSuchField=1", "EventLoops", "EventLoops=x", "ReusePort=maybe", "IdleTimeout=5", "Logger=x", "Deflate=x"} {
		if err := applyOptions(&o, []string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

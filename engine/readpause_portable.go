//go:build windows || wsloop_portable

package engine

import (
	"errors"

	"github.com/panjf2000/gnet/v2"
)

// Where gnet's poller cannot be reached (Windows, where gnet runs a
// goroutine per connection; -tags wsloop_portable, which tests this road on
// Linux), pausing takes the fallback of readpause.go.

func gnetPollerFD(gnet.Conn) int { return -1 }

func setReadInterest(int, int, bool, bool) error {
	return errors.New("wsloop: no poller to pause reads with on this platform")
}

const gnetRestoresRead = false

const portableBuild = true

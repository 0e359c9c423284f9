// Command chat is a chat server a person can open in a browser: the page and
// the WebSocket share one port and one wsloop engine. See README.md for the
// wire protocol.
//
//	go run . -addr :8080                      # one process
//	go run . -addr :8081 -nats nats://127.0.0.1:4222 # several processes sharing rooms
//	go run . -tls-cert cert.pem -tls-key key.pem      # https:// and wss://
//	go run . -max-conns-per-ip 8 -proxy-protocol 10.0.0.0/8 # tighter, behind a balancer
//
// kill -HUP deploys without disconnecting anyone: the process starts its
// own executable again (a new build, if it was replaced) and hands it the
// port, the rooms and every connection (docs/deploy.md at the repository
// root).
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wsloop/wsloop/engine"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address of the page and the WebSocket")
	natsURL := flag.String("nats", "", "NATS server URL (nats://host:port) to share rooms with other chat processes")
	node := flag.String("node", "", "name of this process among those sharing a NATS server (default: generated)")
	history := flag.Int("history", 50, "messages of a room replayed to whoever joins")
	maxText := flag.Int("max-text", 2000, "largest message text in bytes")
	verbose := flag.Bool("v", false, "log joins and leaves")
	deflate := flag.Bool("deflate", false, "accept permessage-deflate (compressed messages)")
	loops := flag.Int("loops", 0, "event loops (default: GOMAXPROCS, the CPUs Go may use)")
	tlsCert := flag.String("tls-cert", "", "certificate file (PEM): serve https:// and wss:// (with -tls-key)")
	tlsKey := flag.String("tls-key", "", "private key file (PEM) of -tls-cert")
	maxPerIP := flag.Int("max-conns-per-ip", 32, "most connections (tabs) one client address may hold; 0: no limit")
	ratePerIP := flag.Int("handshakes-per-ip", 20, "most connections one client address may open per second; 0: no limit")
	proxyNets := flag.String("proxy-protocol", "", "comma-separated CIDRs of load balancers that send a PROXY protocol header; the limits then count their clients")
	handoffDir := flag.String("handoff-dir", defaultHandoffDir(), "directory (mode 0700) of the socket a deploy on SIGHUP hands everything over through")
	flag.Parse()

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// A chat room is open to anyone: one address may hold a few tabs,
	// and reconnect at a human pace, but not take the server's
	// connections for itself (MaxConns) nor reconnect in a tight loop.
	eopts := engine.Options{EventLoops: *loops, Deflate: engine.Deflate{Enabled: *deflate},
		MaxConnsPerClient: *maxPerIP, MaxHandshakesPerClient: *ratePerIP}
	for _, s := range strings.FieldsFunc(*proxyNets, func(r rune) bool { return r == ',' || r == ' ' }) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			log.Error("chat: -proxy-protocol", "err", err)
			os.Exit(2)
		}
		eopts.ProxyProtocol = append(eopts.ProxyProtocol, p)
	}
	if *tlsCert != "" || *tlsKey != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			log.Error("chat: TLS certificate", "err", err)
			os.Exit(1)
		}
		eopts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	cfg := Config{Addr: *addr, NATS: *natsURL, Node: *node, HistorySize: *history, MaxText: *maxText, Logger: log, Engine: eopts}
	// A process started by a deploy takes over from the one that
	// started it; the variable is not passed on to its own successor.
	if dir := os.Getenv(takeoverEnv); dir != "" {
		cfg.TakeOver = dir
		os.Unsetenv(takeoverEnv)
		cfg.OnTakenOver = func(*engine.RestoreResult) { sdNotify(log, fmt.Sprintf("MAINPID=%d\nREADY=1", os.Getpid())) }
	}
	app := NewApp(cfg)
	var deploying sync.WaitGroup
	go redeployOnHUP(ctx, app, *handoffDir, *natsURL != "", log, &deploying)
	if err := app.Start(ctx); err != nil {
		log.Error("chat: cannot start", "err", err)
		os.Exit(1)
	}
	scheme := "http"
	if eopts.TLSConfig != nil {
		scheme = "https"
	}
	log.Info("chat listening", "addr", app.Addr().String(), "page", scheme+"://localhost"+portOf(app.Addr().String())+"/")
	err := app.Wait()
	deploying.Wait() // a deploy ends the server: let it say how it went
	if err != nil {
		log.Error("chat stopped", "err", err)
		os.Exit(1)
	}
}

// takeoverEnv tells a process started by a deploy where to take over from.
const takeoverEnv = "WSLOOP_CHAT_TAKEOVER"

// defaultHandoffDir is a directory of this user's: under $XDG_RUNTIME_DIR
// when there is one (a tmpfs only the user can enter), else in the
// temporary directory.
func defaultHandoffDir() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "wsloop-chat")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("wsloop-chat-%d", os.Getuid()))
}

// redeployOnHUP deploys on every SIGHUP: it starts this executable again
// (which may have been replaced by a new build) with the same arguments,
// and hands it everything. Once the handoff is done Run returns and the
// process exits; if it fails, this process goes on serving.
func redeployOnHUP(ctx context.Context, app *App, dir string, shared bool, log *slog.Logger, deploying *sync.WaitGroup) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		if shared {
			log.Warn("chat: SIGHUP: a live deploy is not supported with -nats (the other nodes would see a new node); ignored")
			continue
		}
		exe, err := os.Executable()
		if err != nil {
			log.Error("chat: deploy: finding this executable", "err", err)
			continue
		}
		cmd := exec.Command(exe, os.Args[1:]...)
		cmd.Env = append(os.Environ(), takeoverEnv+"="+dir)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
		if err := cmd.Start(); err != nil {
			log.Error("chat: deploy: starting the successor", "err", err)
			continue
		}
		log.Info("chat: deploying", "successor_pid", cmd.Process.Pid, "handoff_dir", dir)
		deploying.Add(1)
		hctx, cancel := context.WithCancel(ctx)
		exited := make(chan struct{})
		go func() {
			_ = cmd.Wait() // a successor that dies before the commit calls the handoff off
			close(exited)
			cancel()
		}()
		res, err := app.HandOff(hctx, dir)
		if err != nil {
			cancel()
			log.Error("chat: deploy failed; serving on", "err", err)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill() // it could not take over: it has nothing to serve
			}
			deploying.Done()
			continue
		}
		log.Info("chat: deployed", "successor_pid", res.Successor, "moved", res.Moved, "stayed", res.Stayed,
			"pause", res.Pause, "duration", res.Duration, "drained", res.Drained)
		// Under systemd, the service's main process is the successor
		// now; say so before exiting, or systemd would stop the service
		// when this process exits (the successor says it too).
		if res.Successor > 0 {
			sdNotify(log, fmt.Sprintf("MAINPID=%d", res.Successor))
		}
		deploying.Done()
		return
	}
}

// sdNotify sends a state to systemd when it runs this process as a
// Type=notify service ($NOTIFY_SOCKET): after a takeover, MAINPID tells it
// that this process is the service now (with NotifyAccess=all).
func sdNotify(log *slog.Logger, state string) {
	sock := os.Getenv("NOTIFY_SOCKET")
	if sock == "" {
		return
	}
	if sock[0] == '@' {
		sock = "\x00" + sock[1:] // an abstract socket
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		log.Warn("chat: telling systemd", "err", err)
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		log.Warn("chat: telling systemd", "err", err)
	}
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i:]
		}
	}
	return ""
}

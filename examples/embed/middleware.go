package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"
)

// logRequests logs one line per request, WebSocket upgrades included: for
// those the line comes when Upgrade has returned, with status 101.
func logRequests(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		lw := &loggedWriter{ResponseWriter: w}
		next.ServeHTTP(lw, r)
		status := lw.status
		if status == 0 {
			status = http.StatusOK
		}
		log.Info("http", "method", r.Method, "path", r.URL.Path, "status", status,
			"bytes", lw.bytes, "upgraded", lw.hijacked, "remote", r.RemoteAddr,
			"duration", time.Since(start).Round(time.Microsecond).String())
	})
}

// loggedWriter records the status and size of a response. A wrapper of a
// ResponseWriter hides the methods of the one it wraps: it must implement
// http.Hijacker itself, or engine.Server.Upgrade cannot take the connection
// over (it answers 505 then). Unwrap lets http.ResponseController reach
// what the wrapper does not implement (Flush, deadlines).
type loggedWriter struct {
	http.ResponseWriter
	status   int
	bytes    int64
	hijacked bool
}

func (w *loggedWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *loggedWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Hijack hands the connection to the caller (Upgrade), which writes the 101
// itself.
func (w *loggedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.hijacked, w.status = true, http.StatusSwitchingProtocols
	}
	return c, brw, err
}

// Unwrap returns the wrapped ResponseWriter, for http.ResponseController.
func (w *loggedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// authClient asks a token service who a bearer token belongs to.
type authClient struct {
	url string
	hc  *http.Client
	log *slog.Logger
}

type userKey struct{}

// userFrom returns the user require put into a request's context.
func userFrom(ctx context.Context) string { s, _ := ctx.Value(userKey{}).(string); return s }

// require lets a request through only with a token the token service
// accepts, and puts the user's name into its context. The check is
// blocking network I/O, which is fine here: this is a net/http handler on
// the request's own goroutine, before Upgrade. (On wsloop's own listener
// such a check belongs in handler.AsyncUpgrader, never on the loop.)
func (a *authClient) require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := bearer(r)
		if token == "" {
			unauthorized(w, "missing bearer token (Authorization: Bearer TOKEN, or a token cookie)")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		user, err := a.lookup(ctx, token)
		switch {
		case errors.Is(err, errBadToken):
			unauthorized(w, "invalid token")
			return
		case err != nil:
			a.log.Warn("token service", "err", err) // the reason stays in our logs
			http.Error(w, "token service unavailable, try again later", http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), userKey{}, user)))
	})
}

var errBadToken = errors.New("token not valid")

// lookup asks the token service about token: the token travels in a
// header, never in a URL that some log would keep.
func (a *authClient) lookup(ctx context.Context, token string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := a.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	switch {
	case err != nil:
		return "", err
	case resp.StatusCode == http.StatusUnauthorized:
		return "", errBadToken
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("token service: %s", resp.Status)
	}
	return strings.TrimSpace(string(body)), nil
}

// bearer returns the request's token: from the Authorization header, or
// from a cookie named token, since a browser's WebSocket cannot set
// headers.
func bearer(r *http.Request) string {
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	if c, err := r.Cookie("token"); err == nil {
		return c.Value
	}
	return ""
}

func unauthorized(w http.ResponseWriter, reason string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="embed"`)
	http.Error(w, reason, http.StatusUnauthorized)
}

// tokenService is a stand-in for the service a real deployment asks (an
// OAuth token introspection endpoint, a session store): POST with a bearer
// token, 200 and the user's name if it knows the token, 401 if not.
func tokenService(tokens map[string]string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /check", func(w http.ResponseWriter, r *http.Request) {
		user, ok := tokens[bearer(r)]
		if !ok {
			http.Error(w, "unknown token", http.StatusUnauthorized)
			return
		}
		fmt.Fprintln(w, user)
	})
	return mux
}

// Package bench holds the frame-decoding micro-benchmarks (codec_test.go);
// the comparison harness itself lives in cmd/ (server, wsload, benchall).
// See README.md.
package bench

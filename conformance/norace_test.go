//go:build !race

package conformance

// raceEnabled: the race detector is on (see pmdCount).
const raceEnabled = false

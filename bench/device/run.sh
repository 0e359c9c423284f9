#!/usr/bin/env bash
# One bounded device run of the wsloop bench (issue 15, items 2, 4 and 5), for
# a Linux machine with 16 cores, plenty of memory, root, no network and
# nothing installed: everything it runs is in bench/bin/, built beforehand by
# bench/device/build.sh and carried along.
#
#   bench/device/run.sh                 # results in $OUT (default bench/results/device)
#
# In priority order, each step bounded in time, the whole under BUDGET
# seconds (default 510, i.e. 8.5 minutes):
#   1. tail comparison, server on the first half of the CPUs, load on the
#      second: echo 1000 x 1 KiB, 10000 x 1 KiB, 1000 x 16 KiB; wsloop and
#      gws alternated, one repetition, plus any wsloop variants in VARIANTS;
#   2. scaling table: wsloop echo 1000 x 1 KiB at 1, 2, 4, 8 event loops;
#   3. if time is left: 1,002,000 idle connections over 60 server processes
#      sharing one port (SO_REUSEPORT), bytes per connection for wsloop, then
#      nbio if time allows;
#   4. if time is still left: idle 19,000 connections ramped at 10,000/s,
#      wsloop (one loop per server CPU) and nbio, RSS per connection (issue
#      15 item 3's "0.6x nbio on 8 loops").
#      If time is left after that, the same with the other transparent huge
#      page setting (always <-> madvise), restored afterwards.
# Files in $OUT (8 at most): results.md (all tables), tail.json,
# scaling.json, million-wsloop.json, million-nbio.json, idle.json,
# idle-thp.json, run.log (everything printed).
#
# Settings (environment):
#   VARIANTS   extra server configurations for step 1, separated by ';', each
#              LABEL=[ENV=VAL ...] IMPL [server flags], e.g.
#              VARIANTS='wsloop-l16=wsloop -loops 16;wsloop-rbc=wsloop -opt ReadBufferCap=16384'
#   BUDGET     seconds for the whole script (default 510)
#   DURATION   measured seconds per echo run (default 8)
#   MILLION_N  connections for step 3 (default 1002000), MILLION_SERVERS (60),
#              MILLION_RATE (new connections/s, default 40000)
#   STEPS      which steps to run (default "tail scaling million idle")
#   SYSCTL     0: leave the kernel settings alone (for a trial on a shared
#              machine; the 1M step then needs the settings in place)
set -u

BENCH=$(cd "$(dirname "$0")/.." && pwd)
BIN=$BENCH/bin
OUT=${OUT:-$BENCH/results/device}
BUDGET=${BUDGET:-510}
DURATION=${DURATION:-8}
STEPS=${STEPS:-tail scaling million idle}
SYSCTL=${SYSCTL:-1}
MILLION_N=${MILLION_N:-1002000}
MILLION_SERVERS=${MILLION_SERVERS:-60}
MILLION_RATE=${MILLION_RATE:-40000}
T0=$(date +%s)
mkdir -p "$OUT"
WORK=$(mktemp -d)
SAVED=()

left() { echo $((BUDGET - ($(date +%s) - T0))); }

# bounded SECONDS CMD...: run CMD, TERM after SECONDS, KILL 10 s later. The
# bench binaries also stop by themselves (-run-timeout, -max-time, -max-life)
# and their children die with them (PR_SET_PDEATHSIG).
bounded() {
	local secs=$1
	shift
	if command -v timeout >/dev/null 2>&1; then
		timeout -k 10 "$secs" "$@"
		return $?
	fi
	"$@" &
	local pid=$!
	(sleep "$secs" && kill -TERM "$pid" 2>/dev/null && sleep 10 && kill -KILL "$pid" 2>/dev/null) &
	local watcher=$!
	wait "$pid"
	local rc=$?
	kill "$watcher" 2>/dev/null
	return $rc
}

# setsys KEY VALUE: set a sysctl through /proc/sys, remembering the old value.
setsys() {
	local f=/proc/sys/${1//.//}
	[ -w "$f" ] || { echo "sysctl $1: not writable here"; return; }
	SAVED+=("$f=$(cat "$f")")
	echo "$2" >"$f" 2>/dev/null && echo "sysctl $1 = $(cat "$f")" || echo "sysctl $1: could not set $2"
}

# sysctls sets what many loopback connections need (root): listen backlog
# (read by the servers when they start), ephemeral ports, the per-CPU queue
# loopback packets go through, descriptors machine-wide, and the conntrack
# table, which would otherwise drop new connections once full.
sysctls() {
	setsys net.core.somaxconn 65535
	setsys net.ipv4.tcp_max_syn_backlog 65535
	setsys net.core.netdev_max_backlog 65536
	setsys net.ipv4.ip_local_port_range "1024 65535"
	setsys fs.file-max 4194304
	if [ -e /proc/sys/net/netfilter/nf_conntrack_max ]; then
		setsys net.netfilter.nf_conntrack_max 2097152
		if [ -w /sys/module/nf_conntrack/parameters/hashsize ]; then
			echo 524288 >/sys/module/nf_conntrack/parameters/hashsize 2>/dev/null && echo "nf_conntrack hashsize = $(cat /sys/module/nf_conntrack/parameters/hashsize)"
		fi
	fi
}

restore() {
	local kv
	for kv in "${SAVED[@]}"; do
		echo "${kv#*=}" >"${kv%%=*}" 2>/dev/null
	done
	rm -rf "$WORK"
}

main() {
	# main runs in the pipeline's subshell: restore there, where SAVED is.
	trap restore EXIT
	echo "== wsloop device run, $(date -u '+%Y-%m-%d %H:%M:%S UTC'), budget ${BUDGET}s"
	for b in server wsload benchall million summarize; do
		[ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run bench/device/build.sh before carrying bench/bin"; exit 2; }
	done
	local ncpu half scpus ccpus
	ncpu=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)
	half=$((ncpu / 2))
	scpus="0-$((half - 1))"
	ccpus="$half-$((ncpu - 1))"
	{
		echo "## Machine"
		echo
		echo "- CPUs: $ncpu ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')); server on $scpus, load generator on $ccpus"
		echo "- Memory: $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo); kernel $(uname -r)"
		echo "- RLIMIT_NOFILE: soft $(ulimit -Sn), hard $(ulimit -Hn); transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
	} >"$WORK/machine.md"
	cat "$WORK/machine.md"

	ulimit -n "$(ulimit -Hn)" 2>/dev/null
	[ "$SYSCTL" = 1 ] && sysctls

	local common=(-bin "$BIN" -reps 1 -server-cpus "$scpus" -client-cpus "$ccpus" -no-charts -warmup 2s -duration "${DURATION}s" -run-timeout 60s -pause 200ms)
	local variants=() v
	if [ -n "${VARIANTS:-}" ]; then
		IFS=';' read -r -a vs <<<"$VARIANTS"
		for v in "${vs[@]}"; do
			[ -n "$v" ] && variants+=(-variant "$v")
		done
	fi

	if [[ " $STEPS " == *" tail "* ]]; then
		local t=$(($(left) - 80)) # keep time for the scaling table
		echo
		echo "== 1. tail comparison (${t}s at most)"
		bounded $((t + 20)) "$BIN/benchall" "${common[@]}" -budget "${t}s" -impls wsloop,gws "${variants[@]}" \
			-scenarios echo -echo 1000x1024,10000x1024,1000x16384 -out "$WORK/tail"
		cp "$WORK/tail/results.json" "$OUT/tail.json" 2>/dev/null
	fi

	if [[ " $STEPS " == *" scaling "* ]] && [ "$(left)" -gt 40 ]; then
		local loops=1 l=2
		while [ $l -le "$half" ] && [ $l -le 8 ]; do loops="$loops,$l"; l=$((l * 2)); done
		local t=$(($(left) - 10))
		[ $t -gt 90 ] && t=90
		echo
		echo "== 2. scaling table, loops $loops (${t}s at most)"
		bounded $((t + 20)) "$BIN/benchall" "${common[@]}" -budget "${t}s" -impls wsloop \
			-scenarios scaling -scale-loops "$loops" -scale-echo 1000x1024 -out "$WORK/scaling"
		cp "$WORK/scaling/results.json" "$OUT/scaling.json" 2>/dev/null
	fi

	if [[ " $STEPS " == *" million "* ]]; then
		local impl
		for impl in wsloop nbio; do
			local t=$(($(left) - 5))
			if [ $t -lt 100 ]; then
				echo
				echo "== 3. $MILLION_N connections, $impl: skipped, ${t}s left"
				continue
			fi
			echo
			echo "== 3. $MILLION_N connections, $impl (${t}s at most)"
			bounded $((t + 15)) "$BIN/million" -bin "$BIN" -impls "$impl" -n "$MILLION_N" -servers "$MILLION_SERVERS" \
				-rate "$MILLION_RATE" -hold 10s -sample 0.001 -server-loops 1 -server-env GOMAXPROCS=2 \
				-server-cpus "$scpus" -client-cpus "$ccpus" -ramp-timeout "$((t > 200 ? 120 : t / 2))s" -step-timeout 20s \
				-max-time "${t}s" -out "$WORK/million-$impl"
			cp "$WORK/million-$impl/million.json" "$OUT/million-$impl.json" 2>/dev/null
		done
	fi

	if [[ " $STEPS " == *" idle "* ]] && [ "$(left)" -gt 60 ]; then
		local t=$(($(left) - 5)) thpf=/sys/kernel/mm/transparent_hugepage/enabled thp
		thp=$(sed 's/.*\[\(.*\)\].*/\1/' "$thpf" 2>/dev/null)
		echo
		echo "== 4. idle 19000 connections, ramp 10000/s, wsloop and nbio, transparent huge pages: ${thp:-unknown} (${t}s at most)"
		bounded $((t + 20)) "$BIN/benchall" "${common[@]}" -budget "$((t - 30))s" -impls wsloop,nbio \
			-scenarios idle -idle-n 19000 -idle-rate 10000 -hold 10s -out "$WORK/idle"
		cp "$WORK/idle/results.json" "$OUT/idle.json" 2>/dev/null
		# Huge pages can inflate a small Go heap's RSS: the same runs with
		# the other setting, if the machine lets us switch it.
		local other=madvise
		[ "$thp" = madvise ] && other=always
		t=$(($(left) - 5))
		if [ "$SYSCTL" = 1 ] && [ -n "$thp" ] && [ -w "$thpf" ] && [ $t -gt 60 ]; then
			SAVED+=("$thpf=$thp")
			echo "$other" >"$thpf"
			echo
			echo "== 4b. the same with transparent huge pages: $(sed 's/.*\[\(.*\)\].*/\1/' "$thpf") (${t}s at most)"
			bounded $((t + 20)) "$BIN/benchall" "${common[@]}" -budget "$((t - 30))s" -impls wsloop,nbio \
				-scenarios idle -idle-n 19000 -idle-rate 10000 -hold 10s -out "$WORK/idle-thp"
			cp "$WORK/idle-thp/results.json" "$OUT/idle-thp.json" 2>/dev/null
			echo "$thp" >"$thpf"
		fi
	fi

	{
		echo "# wsloop device run, $(date -u '+%Y-%m-%d %H:%M UTC')"
		echo
		cat "$WORK/machine.md"
		for f in tail scaling million-wsloop million-nbio idle idle-thp; do
			local md=$WORK/$f/results.md
			[ -f "$md" ] || md=$WORK/$f/million.md
			[ -f "$md" ] && { echo; sed '1s/^# /## /' "$md"; }
		done
	} >"$OUT/results.md"

	echo
	echo "== summary ($(($(date +%s) - T0)) s)"
	local files=()
	for f in tail scaling million-wsloop million-nbio idle idle-thp; do
		[ -f "$OUT/$f.json" ] && files+=("$OUT/$f.json")
	done
	[ ${#files[@]} -gt 0 ] && "$BIN/summarize" "${files[@]}"
	echo "results: $OUT/results.md"
}

main 2>&1 | tee "$OUT/run.log"

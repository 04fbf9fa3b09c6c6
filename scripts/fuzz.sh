#!/usr/bin/env bash
# Bounded fuzzing for CI: runs every Go fuzz target (func FuzzXxx in a
# *_test.go file) for FUZZ_TIME seconds each (default 10), one target at a
# time, and fails on the first crash. Failing inputs are written by `go test`
# to the package's testdata/fuzz/<Target>/ directory; re-run one with
#   go test ./<pkg> -run '<Target>/<file>'
#
# Usage: scripts/fuzz.sh [PACKAGE_DIR...]   (default: every package with targets)
# Environment:
#   FUZZ_TIME      seconds per target (default 10)
#   FUZZ_MINIMIZE  seconds to minimise a new input (default 2; Go's default
#                  of 60 s would eat the whole budget of a short run)
#   FUZZ_PARALLEL  fuzzing workers (default: go test's, GOMAXPROCS)
#   GO             go command (default go)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
GO=${GO:-go}
FUZZ_TIME=${FUZZ_TIME:-10}
FUZZ_MINIMIZE=${FUZZ_MINIMIZE:-2}
[[ $FUZZ_TIME =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: FUZZ_TIME=$FUZZ_TIME: want a positive number of seconds" >&2; exit 2; }
[[ $FUZZ_MINIMIZE =~ ^[0-9]+$ ]] || { echo "fuzz.sh: FUZZ_MINIMIZE=$FUZZ_MINIMIZE: want a number of seconds" >&2; exit 2; }
parallel=()
[[ -n ${FUZZ_PARALLEL:-} ]] && parallel=(-parallel "$FUZZ_PARALLEL")

if [[ $# -gt 0 ]]; then
	dirs=("$@")
else
	mapfile -t dirs < <(grep -rl --include='*_test.go' -E '^func Fuzz[A-Za-z0-9_]*\(' . \
		--exclude-dir=build --exclude-dir=tools --exclude-dir=.git | xargs -r -n1 dirname | sort -u)
fi
[[ ${#dirs[@]} -gt 0 ]] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }

total=0
start=$SECONDS
for dir in "${dirs[@]}"; do
	dir=./${dir#./}
	mapfile -t targets < <(grep -h -o -E '^func Fuzz[A-Za-z0-9_]*\(' "$dir"/*_test.go | sed -E 's/^func (Fuzz[A-Za-z0-9_]*)\(/\1/' | sort -u)
	for target in "${targets[@]}"; do
		echo "fuzz.sh: $dir $target for ${FUZZ_TIME}s"
		if ! "$GO" test "$dir" -run '^$' -fuzz "^${target}\$" -fuzztime "${FUZZ_TIME}s" \
			-fuzzminimizetime "${FUZZ_MINIMIZE}s" "${parallel[@]}"; then
			echo "fuzz.sh: FAIL: $dir $target (failing input under $dir/testdata/fuzz/$target/)" >&2
			exit 1
		fi
		total=$((total + 1))
	done
done
echo "fuzz.sh: $total targets passed in $((SECONDS - start))s"

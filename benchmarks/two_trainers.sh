#!/usr/bin/env bash
# Wall time of one `nas train` alone and of two started together, for this checkout and, side by side,
# for a reference checkout of another commit (for example: git worktree add /tmp/ref 6b344a3).
#   benchmarks/two_trainers.sh [REFERENCE_CHECKOUT]
# Run it on an otherwise idle machine, from the repository root, with the venv of the README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
ARGS="'train','--epochs','3','--quiet','--format','csv'"
seconds() { local t0; t0=$(date +%s.%N); "$PY" -c "$1" >/dev/null; echo "$(date +%s.%N) - $t0" | bc; }
measure() {
  local label=$1 code=$2 alone a b
  alone=$(seconds "$code")
  a=$(mktemp); b=$(mktemp)
  seconds "$code" >"$a" & seconds "$code" >"$b" & wait
  printf '%-10s alone %6.1f s   two at once %6.1f s and %6.1f s\n' "$label" "$alone" "$(cat "$a")" "$(cat "$b")"
  rm -f "$a" "$b"
}
if [ $# -ge 1 ]; then
  measure reference "import sys; sys.path.insert(0, '$1'); from nas.cli import main; sys.exit(main([$ARGS]))"
fi
measure this "import sys; from nas.cli import main; sys.exit(main([$ARGS]))"

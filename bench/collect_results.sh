#!/usr/bin/env bash
# Copy the small result files of a study's finished runs into this checkout, for committing.
#
#   bench/collect_results.sh /path/to/other/checkout/results/cpu results/cpu
#
# For a study run from another checkout (e.g. a git worktree kept still while the study runs, so
# that edits here never reach a running notebook): every run whose run.json says "done" gets its
# JSON, CSV and PNG files copied (never checkpoints, executed notebooks or saved tensors), and
# plan.json, study.json and the other top-level records come along, and the explanation figures
# are drawn from maps.pt into figures/<table>-maps.png (bench/render_maps.py). Nothing is committed.
set -euo pipefail
src=${1:?source results folder, e.g. /work/study-run/results/cpu}
dest=${2:?destination results folder, e.g. results/cpu}
mkdir -p "$dest/runs"
for f in "$src"/*.json "$src"/*.csv; do [ -e "$f" ] && cp "$f" "$dest/"; done
for d in "$src"/*/; do
    name=$(basename "$d")
    [ "$name" = runs ] || [ "$name" = submitit ] && continue
    mkdir -p "$dest/$name" && find "$d" -maxdepth 1 -type f \( -name '*.json' -o -name '*.csv' -o -name '*.png' \) \
        -exec cp {} "$dest/$name/" \;
done
n=0
for run in "$src"/runs/*/; do
    id=$(basename "$run")
    grep -q '"status": "done"' "$run/run.json" 2>/dev/null || continue
    mkdir -p "$dest/runs/$id"
    find "$run" -maxdepth 1 -type f \( -name '*.json' -o -name '*.csv' -o -name '*.png' \) -exec cp {} "$dest/runs/$id/" \;
    n=$((n + 1))
done
echo "copied the records of $n finished runs into $dest"
# the explanation figures as pictures (maps.pt holds CT slices as tensors and is never copied)
"$(dirname "$0")/../.venv/bin/python" "$(dirname "$0")/render_maps.py" "$src" "$dest"

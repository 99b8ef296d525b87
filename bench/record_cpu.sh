#!/usr/bin/env bash
# The recorded real-data study: the cpu profile on ../shared/data, gated by the pilot.
#
#   nohup bench/record_cpu.sh > /tmp/covtl-record.log 2>&1 &
#
# 1. The gate: bench/pilot.py (covtl's fine-tune against a plain torchvision loop, 3 seeds each,
#    ~40 min on 2 cores) unless results/pilot/ already holds a pilot of this engine code. The
#    study does not start when the two sides disagree on any metric.
# 2. covtl study --profile cpu: every run of the plan into results/cpu/runs/. Resumable: after a
#    stop, run this script again; finished runs are kept (the study's cache), an interrupted run
#    resumes from its last epoch, and a finished run whose checkpoint a later run needs is
#    recomputed when the checkpoint is gone (checkpoints are never committed).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_ROOT=${DATA_ROOT:-../shared/data}
PY=.venv/bin/python
code=$($PY -c "from covtl.study import _source_hash; print(_source_hash())")
if [ "$(cat results/pilot/engine-code 2>/dev/null)" != "$code" ]; then
    echo "== pilot on engine code $code ($(date -u +%FT%TZ))"
    rm -rf /tmp/covtl-pilot
    $PY bench/pilot.py --data "$DATA_ROOT" --out /tmp/covtl-pilot | tee /tmp/covtl-pilot.txt
    if grep -q DISAGREE /tmp/covtl-pilot.txt; then
        echo "pilot: covtl and the plain loop disagree; the study is not started (see /tmp/covtl-pilot.txt)"
        exit 1
    fi
    rm -rf results/pilot/engine-s*
    for d in /tmp/covtl-pilot/engine-s*; do
        mkdir -p "results/pilot/$(basename "$d")"
        cp "$d"/{metrics.json,history.json,predictions.csv} "results/pilot/$(basename "$d")/"
    done
    cp /tmp/covtl-pilot/pilot.json results/pilot/pilot.json
    grep -v -e '^wrote ' -e '^epoch ' /tmp/covtl-pilot.txt > results/pilot/pilot.txt
    echo "$code" > results/pilot/engine-code
fi
echo "== study cpu ($(date -u +%FT%TZ))"
.venv/bin/covtl study --profile cpu --data-root "$DATA_ROOT"
echo "== done ($(date -u +%FT%TZ))"

#!/usr/bin/env bash
# The checks that need a GPU, in one short script (under 8 minutes on one modern card), ending
# in one table. Run from the repository root of a checkout whose .venv is installed (`make test`
# builds it; on a CUDA machine install torch's CUDA build into it first):
#
#     bash benchmarks/gpu_check.sh            # writes its scratch into $OUT or a temporary folder
#
# 1. the test suite on CUDA (every "auto" device resolves to the GPU there);
# 2. the 128 px training step in bf16 against the bf16 matmul peak measured on the same card;
# 3. a 10-hospital federation (FedAvg, 2 rounds) whose hospitals share the GPU;
# 4. Opacus (DP-SGD on the discriminator) and SecAgg+ on CUDA.
set -uo pipefail

PY=${PY:-.venv/bin/python}
FEDGAN=${FEDGAN:-.venv/bin/fedgan}
WORK=${OUT:-$(mktemp -d)}/gpu-check
mkdir -p "$WORK"
TABLE="$WORK/table.txt"
: > "$TABLE"

row() {  # name, seconds, status, figure
    printf '%-34s %8s  %-6s %s\n' "$1" "$2" "$3" "$4" >> "$TABLE"
}

check() {  # name, figure-extracting command (reads the log on stdin), command...
    local name=$1 extract=$2
    shift 2
    local log="$WORK/$(echo "$name" | tr ' /' '__').log"
    local started=$SECONDS
    if "$@" > "$log" 2>&1; then status=ok; else status=FAILED; fi
    row "$name" "$((SECONDS - started))" "$status" "$(bash -c "$extract" < "$log" | tr '\n' ' ' | cut -c1-90)"
}

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "no CUDA device visible to torch: install torch's CUDA build into .venv" >&2
    exit 2
}
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(), '| torch', torch.__version__)" | tee "$WORK/device.txt"

check "test suite on CUDA" "tail -1" \
    "$PY" -m pytest -q -x -p no:cacheprovider
check "128 px step, bf16 vs bf16 peak" "grep -E 'ceiling|images/s' | head -4" \
    "$PY" benchmarks/train_throughput.py --device cuda --batch-size 256 --resolutions 128
check "data: 600 photographs, 128 px store" "tail -1" \
    bash -c "'$FEDGAN' synth fundus --out '$WORK/eyepacs' --count 600 --size 384 --overwrite -q && \
             '$FEDGAN' prepare --input '$WORK/eyepacs' --out '$WORK/store' --overwrite -q"
check "10 hospitals, FedAvg, 2 rounds on GPU" "grep -E 'completed' | tail -1" \
    "$FEDGAN" federate --store "$WORK/store" --out "$WORK/fed10" --clients 10 --partition iid --rounds 2 \
    --batch-size 32 --conditional -q
check "SecAgg+ on CUDA, 3 hospitals" "grep -E 'completed' | tail -1" \
    "$FEDGAN" federate --store "$WORK/store" --out "$WORK/secagg" --clients 3 --partition iid --rounds 1 \
    --batch-size 32 --secagg -q
check "Opacus DP-SGD on CUDA" "grep -E 'trained|epsilon' | tail -1" \
    "$FEDGAN" train --store "$WORK/store" --out "$WORK/dp" --epochs 1 --batch-size 32 --device cuda \
    --dp-noise 1.0 --no-spectral-norm --norm group -q

echo
printf '%-34s %8s  %-6s %s\n' "check" "seconds" "status" "figure"
cat "$TABLE"
echo "logs: $WORK"
! grep -q FAILED "$TABLE"

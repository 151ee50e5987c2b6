#!/usr/bin/env bash
# The core benchmarks on one device in one table: encoder images/s, 64-box decode, automatic
# masks, grounded pipeline per image; textseg vs the official code (benchmarks/bench_gpu.py).
#
#   bash benchmarks/gpu.sh                  # one GPU (cuda), real sizes: under 8 minutes
#   bash benchmarks/gpu.sh --compile        # the same with torch.compile on the encoder
#   bash benchmarks/gpu.sh --device cpu     # smoke test: tiny models, small sizes (the suite)
#
# Other arguments go to bench_gpu.py. PYTHON picks the interpreter (default: the repo's .venv).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
device=cuda
if [ "${1:-}" = "--device" ]; then
    device="${2:?--device needs a value}"
    shift 2
fi
cd "$here"
if [ "$device" = cpu ]; then
    exec "$python" bench_gpu.py --device cpu --tiny --images 1 --batch 1 --boxes 4 --grid 2 \
        --repeats 1 --precision none "$@"
fi
exec "$python" bench_gpu.py --device "$device" --images 8 --batch 8 --boxes 64 --grid 32 \
    --precision bfloat16 "$@"

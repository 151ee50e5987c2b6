#!/usr/bin/env bash
# The core benchmarks on one device in one table: encoder images/s, 64-box decode, automatic
# masks, grounded pipeline per image; textseg vs the official code (benchmarks/bench_gpu.py).
# Then the serving rows (benchmarks/bench_serve.py), on the GPU only.
# Then a video block (GPU only): propagation ms/frame at 1/8/32 objects, text tracking frames/s.
#
#   bash benchmarks/gpu.sh                  # one GPU (cuda), real sizes: under 8 minutes
#   bash benchmarks/gpu.sh --compile        # the same with torch.compile on the encoder
#   bash benchmarks/gpu.sh --device cpu     # smoke test: tiny models, small sizes (the suite;
#                                           # no video block: that one has no tiny mode)
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
"$python" bench_gpu.py --device "$device" --images 8 --batch 8 --boxes 64 --grid 32 \
    --precision bfloat16 "$@"

# --- serve: /segment throughput of `textseg serve` (16 clients, 64 requests of one 640x480
# image, fast preset at real size with random weights, the detector's 10 best boxes) vs a loop
# of TextSegmenter.segment at batch 1, p50/p99; /click on a cached image vs the in-process
# decode, p50/p99. (Its CPU smoke run is bench_serve.py --quick, in tests/serve/test_bench.py.)
echo
"$python" bench_serve.py --device "$device" --clients 16 --requests 64 --clicks 200 \
    --only segment --only click

# Video (benchmarks/bench_video.py, real sizes: sam2.1-hiera-tiny, grounding-dino-tiny, random
# weights): propagation ms/frame at 1 / 8 / 32 objects against the official SAM2VideoPredictor
# (part b), and text tracking frames/s, 4 objects, keyframes every 5 frames, against the
# Grounded-SAM-2 per-frame loop (part a). VIDEO=0 skips this block.
if [ "${VIDEO:-1}" != 0 ]; then
    echo
    echo "## video"
    "$python" bench_video.py --device "$device" --parts b --scaling 1,8,32 --scaling-frames 10
    "$python" bench_video.py --device "$device" --parts a --frames 30 --objects 4 --every 5
fi

"""Click-style refinement on one cached embedding: a click, then a background click to fix it.

    python examples/click_refinement.py ../shared/data/demo/dog.jpg 300 200 420 120 \
        --model sam-vit-tiny-test

The image is encoded once; every further click is answered by the light decoder only.
"""

import argparse
import time

from textseg.sam import SamCore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("x", type=float, help="foreground click")
    parser.add_argument("y", type=float)
    parser.add_argument("bx", type=float, help="background click")
    parser.add_argument("by", type=float)
    parser.add_argument("--model", default="sam-vit-b")
    args = parser.parse_args()

    core = SamCore(args.model)
    start = time.perf_counter()
    embedding = core.encode(args.image)
    print(f"encoded once in {time.perf_counter() - start:.2f} s")

    start = time.perf_counter()
    first = core.predict(
        embedding,
        points=[[args.x, args.y]],
        point_labels=[1],
        multimask_output=True,
        return_all=True,
        return_logits=True,
    )
    print(f"click 1: {time.perf_counter() - start:.3f} s, candidate IoUs {first.data['sam_iou']}")
    best = int(first.data["sam_iou"].argmax())

    start = time.perf_counter()
    refined = core.predict(
        embedding,
        points=[[args.x, args.y], [args.bx, args.by]],
        point_labels=[1, 0],
        mask_inputs=first.data["low_res_logits"][best][None],
    )
    print(f"click 2: {time.perf_counter() - start:.3f} s, area {int(refined.mask[0].sum())} px")
    print("cache:", core.cache.stats())


if __name__ == "__main__":
    main()

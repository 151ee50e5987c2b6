"""Segment named objects in one image and save an annotated copy.

python examples/segment_and_annotate.py ../shared/data/demo/dog.jpg dog frisbee --preset tiny-test
"""

import argparse

from textseg import TextSegmenter
from textseg.io import save_annotated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image")
    parser.add_argument("classes", nargs="+")
    parser.add_argument("--preset", default="grounded-sam")
    parser.add_argument("--out", default="annotated.jpg")
    args = parser.parse_args()

    segmenter = TextSegmenter.from_preset(args.preset)
    result = segmenter.segment(args.image, args.classes)
    print(result.counts, {k: f"{v:.0f} ms" for k, v in result.timings.items()})
    save_annotated(args.out, args.image, result.detections)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

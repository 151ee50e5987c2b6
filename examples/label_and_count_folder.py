"""Label every image of a folder into a COCO file and count instances per class.

    python examples/label_and_count_folder.py ../shared/data/coco-dev/images out/ person dog \
        --preset tiny-test

Writes image by image (``CocoWriter`` resumes: run it again after an interruption and it skips
the images already labelled), then the per-image counts as CSV.
"""

import argparse
from pathlib import Path

from textseg import TextSegmenter
from textseg.io import CocoWriter, load_counts_csv, save_counts_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("classes", nargs="+")
    parser.add_argument("--preset", default="grounded-sam")
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()

    paths = sorted(
        p for p in args.folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
    )
    segmenter = TextSegmenter.from_preset(args.preset)
    counts_csv = args.out / "counts.csv"
    # Resuming: keep the counts of the images labelled by the earlier run.
    counts = load_counts_csv(counts_csv) if counts_csv.exists() else {}
    with CocoWriter(args.out / "annotations.json", args.classes, flush_every=1) as writer:
        todo = [p for p in paths[: args.limit] if p.name not in writer]
        for result in segmenter.iter_segment([str(p) for p in todo], args.classes):
            name = Path(result.source).name
            h, w = result.image_size
            writer.add(name, w, h, result.detections)
            counts[name] = result.counts
            print(name, result.counts)
            save_counts_csv(counts_csv, counts, names=args.classes)  # small: after each image


if __name__ == "__main__":
    main()

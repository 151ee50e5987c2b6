"""Frame sources: arrays, folders and video files, lazily; bad frames reported and skipped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from textseg.video import open_video
from textseg.video.export import VideoWriter


def _frames(n: int = 6, h: int = 48, w: int = 64) -> list[np.ndarray]:
    return [np.full((h, w, 3), 20 * t, np.uint8) for t in range(n)]


def test_arrays_lazy_range_and_bad_frame():
    frames = _frames()
    src = open_video(frames, fps=10)
    assert src.num_frames == 6 and src.fps == 10
    got = list(src)
    assert [f.index for f in got] == list(range(6))
    assert got[3].time == pytest.approx(0.3) and np.array_equal(got[3].image, frames[3])
    assert [f.index for f in open_video(frames, start=2, end=4)] == [2, 3]
    assert len(list(open_video(np.stack(frames)))) == 6
    assert [f.index for f in open_video(iter(frames), start=4)] == [4, 5]
    broken = [*frames[:2], np.zeros((4, 4, 5), np.uint8), *frames[3:]]
    out = list(open_video(broken))
    assert out[2].image is None and "frames[2]" in out[2].error
    assert all(f.image is not None for f in out if f.index != 2)


@pytest.mark.parametrize(
    ("source", "options", "error", "match"),
    [
        ([], {}, ValueError, "no frames"),
        (_frames(), {"start": -1}, ValueError, "start"),
        (_frames(), {"start": 3, "end": 3}, ValueError, "end"),
        (_frames(), {"fps": 0}, ValueError, "fps"),
        (42, {}, TypeError, "expected a video file"),
        (np.zeros((4, 4, 3), np.uint8), {}, ValueError, r"\(T, H, W, 3\)"),
    ],
)
def test_bad_input(source, options, error, match):
    with pytest.raises(error, match=match):
        open_video(source, **options)


def test_folder_natural_order_and_corrupt_file(tmp_path):
    for t, frame in enumerate(_frames(12)):
        Image.fromarray(frame).save(tmp_path / f"frame{t}.png")
    (tmp_path / "frame5.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "notes.txt").write_text("not a frame")
    out = list(open_video(tmp_path, fps=5))
    assert [f.index for f in out] == list(range(12))
    assert out[10].image[0, 0, 0] == 200  # frame10 after frame9, not after frame1
    assert out[5].image is None and out[5].error.startswith("frame5.png")
    assert out[6].time == pytest.approx(1.2)


def test_missing_and_non_video_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="video not found"):
        open_video(tmp_path / "nope.mp4")
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a video file"):
        open_video(tmp_path / "a.txt")
    (tmp_path / "b.mp4").write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="cannot read video"):
        open_video(tmp_path / "b.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no frames"):
        open_video(tmp_path / "empty")


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".webm"])
def test_video_file_roundtrip(tmp_path, suffix):
    frames = [
        np.roll(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3)), t, 1)
        for t in range(10)
    ]
    path = tmp_path / f"clip{suffix}"
    with VideoWriter(path, fps=10) as writer:
        for f in frames:
            writer.write(f)
    src = open_video(path)
    assert src.fps == pytest.approx(10) and src.num_frames == 10
    got = list(src)
    assert [f.index for f in got] == list(range(10))
    for f in got:
        assert f.image.shape == (48, 64, 3) and f.error is None
        assert np.abs(f.image.astype(int) - frames[f.index]).mean() < 12  # lossy codecs
    assert [f.index for f in open_video(path, start=4, end=7)] == [4, 5, 6]


def test_corrupt_frame_mid_video_is_reported_and_skipped(tmp_path):
    """A Motion-JPEG AVI with frame 4's data overwritten: frame 4 is an error, 0-3 and 5-9
    decode."""
    import av

    path = tmp_path / "clip.avi"
    with VideoWriter(path, fps=10) as writer:
        for f in _frames(10):
            writer.write(f)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pos, p.size) for p in container.demux(stream) if p.size]
    data = bytearray(path.read_bytes())
    pos, size = packets[4]
    data[pos : pos + size] = bytes(size)
    path.write_bytes(bytes(data))
    out = list(open_video(path))
    assert [f.index for f in out] == list(range(10))
    assert out[4].image is None and "frame 4" in out[4].error
    for f in out:
        if f.index != 4:
            assert abs(int(f.image.mean()) - 20 * f.index) <= 3

"""``--engine ray``: the same app as a Ray Serve deployment on a local Ray cluster; one /segment
request through Ray's proxy answers what the seeded tiny preset answers in this process."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import httpx
import pytest

from .._limits import HANG_S

pytest.importorskip("ray.serve", reason="ray[serve] is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a local Ray cluster and a replica: about 2 minutes on 2 loaded cores
def test_ray_serve_answers_segment(kit: Any, segmenter: Any) -> None:
    import ray
    from ray import serve

    from textseg.serve import ServeSpec
    from textseg.serve.ray_engine import run_ray

    spec = ServeSpec(
        preset="grounded-sam",
        seed=0,
        preset_options={"tiny": True},
        service_options={"max_batch": 2, "queue_size": 4},
    )
    port = _free_port()
    # Replicas import textseg from this checkout, offline, as the test process does.
    env = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TEXTSEG_OFFLINE", "TEXTSEG_CACHE")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="error",
        log_to_driver=False,
        runtime_env={"env_vars": env},
    )
    try:
        run_ray(spec, port=port, blocking=False, replicas=1, cpus_per_replica=1)
        image = kit.small_image(42)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=HANG_S) as c:
            assert c.get("/health").json()["status"] == "UP"
            r = c.post(
                "/segment",
                files={"image": ("x.png", kit.png(image), "image/png")},
                data={"classes": ["cat", "dog"]},
            )
        assert r.status_code == 200, r.text
        here = segmenter.segment(image, ["cat", "dog"])
        assert r.json()["counts"] == here.counts
        assert [i["mask"] for i in r.json()["instances"]] == here.masks.rles
    finally:
        serve.shutdown()
        ray.shutdown()


def test_autoscaling_options_refuse_bad_bounds() -> None:
    from textseg.serve import ServeSpec
    from textseg.serve.ray_engine import deployment

    with pytest.raises(ValueError, match="max_replicas: expected >= min_replicas"):
        deployment(ServeSpec("grounded-sam"), min_replicas=3, max_replicas=2)
    app = deployment(ServeSpec("grounded-sam"), replicas=2, min_replicas=1, max_replicas=4)
    assert app is not None

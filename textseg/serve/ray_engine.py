"""``textseg serve --engine ray``: the same app as a Ray Serve deployment, one model copy per
replica.

Each replica builds the :class:`~textseg.serve.spec.ServeSpec` it is given (the preset under its
seed, a :class:`~textseg.serve.service.BatchingService`, the FastAPI app); Ray's proxy spreads
the requests over the replicas, and each replica batches the ones it holds. ``image_id`` /
``mask_id`` live in the replica that made them: a click naming one may reach another replica,
which answers 404 (send the image again) — send the image itself when there are several.
"""

from __future__ import annotations

from typing import Any

from textseg.serve.spec import ServeSpec
from textseg.validators import non_negative_number, optional_positive_int, positive_int

__all__ = ["deployment", "run_ray"]


def deployment(
    spec: ServeSpec,
    *,
    replicas: int = 1,
    gpus_per_replica: float = 0.0,
    cpus_per_replica: float = 1.0,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
) -> Any:
    """The bound Ray Serve application (``serve.run`` it).

    Args:
        spec: What each replica builds.
        replicas: Replicas at start (fixed unless autoscaling is on).
        gpus_per_replica: GPUs reserved per replica (fractions share a GPU).
        cpus_per_replica: CPUs reserved per replica.
        min_replicas: With ``max_replicas``: autoscale between the two on queued requests.
        max_replicas: Upper bound of autoscaling.
    """
    from ray import serve

    replicas = positive_int(replicas, "replicas")
    gpus = non_negative_number(gpus_per_replica, "gpus_per_replica")
    cpus = non_negative_number(cpus_per_replica, "cpus_per_replica")
    low = optional_positive_int(min_replicas, "min_replicas")
    high = optional_positive_int(max_replicas, "max_replicas")

    @serve.deployment(name="textseg")
    @serve.ingress()
    class TextSegReplica:
        def __init__(self, spec: ServeSpec) -> None:
            self.spec = spec

        def __serve_build_asgi_app__(self) -> Any:
            return self.spec.build()

    service = spec.service_options
    # Ray's per-replica cap would otherwise refuse before the service's own queue does.
    ongoing = service.get("queue_size", 64) + service.get("max_batch", 8)
    options: dict[str, Any] = {
        "ray_actor_options": {"num_gpus": gpus, "num_cpus": cpus},
        "max_ongoing_requests": ongoing,
    }
    if low is not None or high is not None:
        low = low or 1
        high = high or max(low, replicas)
        if high < low:
            raise ValueError(
                f"max_replicas: expected >= min_replicas ({low}), got {high}; raise it"
            )
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "initial_replicas": min(max(replicas, low), high),
            "target_ongoing_requests": max(1, service.get("max_batch", 8)),
        }
    else:
        options["num_replicas"] = replicas
    return TextSegReplica.options(**options).bind(spec)


def run_ray(
    spec: ServeSpec,
    *,
    host: str = "127.0.0.1",
    port: int = 9090,
    blocking: bool = True,
    **deployment_options: Any,
) -> Any:
    """Start (or join: ``RAY_ADDRESS``) a Ray cluster and serve ``spec`` on ``host:port``.

    Returns:
        The application's handle (after ``blocking=False``).
    """
    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(logging_level="warning", log_to_driver=False)
    serve.start(http_options={"host": host, "port": port})
    app = deployment(spec, **deployment_options)
    return serve.run(app, name="textseg", route_prefix="/", blocking=blocking)

"""What one server process (or Ray replica) builds: the preset, the service and the app.

A :class:`ServeSpec` is plain data (it travels to Ray replicas by pickle); :meth:`ServeSpec.build`
makes the model, the :class:`~textseg.serve.service.BatchingService` and the FastAPI app from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ServeSpec"]


@dataclass
class ServeSpec:
    """How to build a server.

    Attributes:
        preset: Preset name (:func:`textseg.pipelines.list_presets`).
        seed: Torch seed the models are built under.
        device: Where the models run (``cpu``, ``cuda``, ``auto``).
        preset_options: ``TextSegmenter.from_preset`` keyword arguments (``tiny``,
            ``pretrained``, ``dtype``...).
        service_options: :class:`~textseg.serve.service.BatchingService` keyword arguments.
        app_options: :func:`~textseg.serve.app.create_app` keyword arguments (``token``,
            limits, ``allowed_root``).
    """

    preset: str
    seed: int = 0
    device: str = "cpu"
    preset_options: dict[str, Any] = field(default_factory=dict)
    service_options: dict[str, Any] = field(default_factory=dict)
    app_options: dict[str, Any] = field(default_factory=dict)

    def build_service(self) -> Any:
        from textseg.serve.service import BatchingService

        return BatchingService.from_preset(
            self.preset,
            seed=self.seed,
            device=self.device,
            preset_options=self.preset_options,
            **self.service_options,
        )

    def build(self) -> Any:
        """The FastAPI app with its service."""
        from textseg.serve.app import create_app

        return create_app(self.build_service(), **self.app_options)

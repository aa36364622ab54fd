"""Serving a multi-exit model: layer-wise continuous batching and static batching (`scheduler`, no extra
dependencies), the HTTP server of `hf-multiexit serve` (`server`, extra `[serve]`) and its Ray Serve deployment
(`ray_serve`, extra `[ray]`)."""

from .scheduler import (
    SCHEDULERS,
    ContinuousScheduler,
    Overloaded,
    Prediction,
    Scheduler,
    StaticScheduler,
    build_scheduler,
)

__all__ = [
    "SCHEDULERS",
    "ContinuousScheduler",
    "Overloaded",
    "Prediction",
    "Scheduler",
    "StaticScheduler",
    "build_scheduler",
]

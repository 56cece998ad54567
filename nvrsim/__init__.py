"""nvrsim: a simulated Hikvision NVR for the demo, the tests and the benchmarks."""
from __future__ import annotations

from .recordings import Catalogue, Recording
from .server import Device, Faults, Server

__all__ = ["Catalogue", "Device", "Faults", "Recording", "Server"]

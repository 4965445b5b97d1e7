"""What a run ran on: library versions, Python, CPU/GPU. Recorded in checkpoints and summaries."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "tunesmith")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide a run's numbers."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict:
    """Python, platform, CPU count and the GPU (if torch sees one)."""
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": platform.processor() or
            platform.machine(), "cpu_count": os.cpu_count(), "gpu": None}
    torch = sys.modules.get("torch")  # only asked when torch is already loaded: never imports it
    if torch is not None and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info

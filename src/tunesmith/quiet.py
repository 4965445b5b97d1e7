"""Quiet by default, everything with ``--debug``.

Third-party libraries print things no user can act on: transformers' per-weight loading
bar and its load report (which calls a new classification head "MISSING", in ANSI
colours, even in log files), PEFT's and bitsandbytes' deprecation warnings about their
own internals. Tunesmith says what matters in its own words (``new classification head:
2 labels``) and filters the rest, unless ``--debug`` (or ``TUNESMITH_DEBUG=1``) asks to see
everything. Download progress bars stay: a download is long work.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import contextmanager

# (message regex, category) of warnings that need no action from the user.
KNOWN_NOISE = (
    (r".*is_gradient_checkpointing.* is deprecated", FutureWarning),  # PEFT calling transformers
    (r"_check_is_size will be removed", FutureWarning),  # bitsandbytes calling torch
)

# Loggers whose warnings need no action from the user: bitsandbytes (>= 0.49) on an
# AVX512-BF16 CPU tries to fetch a hub kernel for its packed 4-bit inference path when it is
# imported and warns when it cannot; Tunesmith keeps that path off (models/quantize.py).
NOISY_LOGGERS = ("bitsandbytes.backends.cpu.ops",)


def debug_enabled() -> bool:
    return os.environ.get("TUNESMITH_DEBUG", "") not in ("", "0")


@contextmanager
def debug_mode(on: bool):
    """The CLI's ``--debug`` for one command: every library message is shown while it runs
    (child processes inherit it); afterwards the previous setting is back, so an
    in-process caller (a test, a notebook) is not left in debug mode."""
    previous = os.environ.get("TUNESMITH_DEBUG")
    if on:
        os.environ["TUNESMITH_DEBUG"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TUNESMITH_DEBUG", None)
        else:
            os.environ["TUNESMITH_DEBUG"] = previous


def filter_known_noise() -> None:
    """Install warning filters for :data:`KNOWN_NOISE` (nothing under ``--debug``)."""
    if debug_enabled():
        return
    for message, category in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def quiet_loading(local: bool = True):
    """Around ``from_pretrained``: transformers logs errors only, and (for a local folder,
    where nothing downloads) draws no per-weight bar. Restores both afterwards."""
    if debug_enabled():
        yield
        return
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if local:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars and local:
            hf_logging.enable_progress_bar()

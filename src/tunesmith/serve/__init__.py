"""``tunesmith serve``: an OpenAI-compatible server for a base model and many adapters."""

from __future__ import annotations

from pathlib import Path

from tunesmith.errors import ConfigError


def parse_adapter_specs(specs: list[str]) -> list[tuple[str, str]]:
    """``NAME=RUN_DIR`` pairs from the command line.

    Raises:
        ConfigError: a spec without ``=`` or with an empty side.
    """
    pairs = []
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--adapter {spec!r} is not NAME=RUN_DIR.", "Example: --adapter support=runs/support-lora")
        pairs.append((name.strip(), path.strip()))
    return pairs


def build_server(base: str | None, adapters: list[tuple[str, str]], *, api_key: str | None = None,
                 allowed_dirs: list[str] | None = None, max_batch: int = 8, batch_wait_ms: float = 10.0,
                 max_body_bytes: int = 1_000_000, log=print):
    """Load the models and return ``(app, engine)``.

    Raises:
        ConfigError: nothing to serve, a bad adapter spec, or a run that cannot be loaded.
    """
    from tunesmith.serve.app import create_app
    from tunesmith.serve.engine import Engine
    from tunesmith.serve.registry import Registry

    if not base and not adapters:
        raise ConfigError("Nothing to serve.", "Give --base MODEL and/or --adapter NAME=RUN_DIR.")
    registry = Registry()
    if base:
        log(f"loading base {base} ...")
        registry.add_base(base)
    for name, path in adapters:
        log(f"loading {name} from {path} ...")
        entry = registry.add_run(name, path)
        shared = f"on shared base {entry.group.key[0]}" if entry.group is not None else "as its own model"
        log(f"  {name}: {entry.kind}, method {entry.method}, {shared}")
    engine = Engine(registry, max_batch=max_batch, batch_wait_ms=batch_wait_ms)
    roots = [Path(d) for d in (allowed_dirs or ["runs"])]
    app = create_app(registry, engine, api_key=api_key, allowed_dirs=roots, max_body_bytes=max_body_bytes)
    return app, engine

"""Which models the server holds: bases in memory once, adapters on them by name.

LoRA-family and IA3 adapters that share a base (same weights, task, label count,
quantisation and PEFT tuner) are loaded into one ``PeftModel`` and picked per request
with ``set_adapter``; a 4 MB adapter costs 4 MB, not another copy of the base. Methods
that cannot share a base this way (prompt/prefix tuning, bottleneck adapters, full
fine-tuning) are loaded as models of their own. Every method of the registry runs on
the engine's single worker thread, so switching adapters never races a request.
"""

from __future__ import annotations

import json
import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.config.methods import method_info
from tunesmith.errors import ConfigError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")


@dataclass
class BaseGroup:
    """One base model in memory and the PEFT adapters loaded onto it."""

    key: tuple
    model: object  # the plain transformers model until the first adapter wraps it
    peft: object | None = None
    adapters: set[str] = field(default_factory=set)


@dataclass
class Entry:
    """A servable model id."""

    name: str
    task: str  # "causal_lm" | "classification"
    method: str
    tokenizer: object
    meta: dict
    group: BaseGroup | None = None  # shared base (adapter or the base itself)
    model: object | None = None  # a model of its own
    source: str = ""

    def activate(self):
        """Return ``(model, context)``: call the model inside the context to get this entry's outputs."""
        if self.model is not None:
            return self.model, nullcontext()
        group = self.group
        if self.method == "base":
            return (group.peft, group.peft.disable_adapter()) if group.peft is not None else (group.model, nullcontext())
        group.peft.set_adapter(self.name)
        return group.peft, nullcontext()

    def mixed_batch_key(self):
        """Entries with equal keys can share one generation batch through PEFT's per-row
        ``adapter_names`` (LoRA without DoRA, or the bare base, with the same tokenizer);
        ``None`` when this entry must be batched alone."""
        group = self.group
        if group is None or group.key[-1] != "LORA" or (self.meta.get("method_config") or {}).get("use_dora"):
            return None
        tok = self.tokenizer
        return (id(group), len(tok), tok.eos_token_id, tok.pad_token_id)

    @property
    def kind(self) -> str:
        """What the entry answers: "causal_lm" (chat and completions), "classification"
        (labels) or "reward" (a reward model's one output: scores)."""
        return "reward" if self.meta.get("stage") == "reward" else self.task

    @property
    def peft_adapter_name(self) -> str:
        return "__base__" if self.method == "base" else self.name

    @property
    def context_length(self) -> int:
        model = self.model if self.model is not None else self.group.model
        config = getattr(model, "config", None)
        return int(getattr(config, "max_position_embeddings", None) or self.meta.get("max_length") or 2048)


class Registry:
    """Model ids -> entries; loading and unloading keep shared bases consistent."""

    def __init__(self):
        self.entries: dict[str, Entry] = {}
        self.groups: dict[tuple, BaseGroup] = {}

    def names(self) -> list[str]:
        return list(self.entries)

    def get(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def add_base(self, spec: str, name: str | None = None) -> Entry:
        """Serve a causal-LM base model as it is, under model id ``name``.

        The id defaults to ``spec`` (``builtin:smollm2-135m``, ``org/model``) or, for a
        local folder, the folder's name.
        """
        from tunesmith.models.load import load_model, resolve_model_source

        name = name or (spec if NAME_PATTERN.match(spec) else Path(spec).name)
        self._check_new_name(name)
        source = resolve_model_source(spec)
        key = (source, "causal_lm", None, None, "LORA")
        group = self.groups.get(key)
        if group is None:
            model, tokenizer = load_model(spec, "causal_lm")
            group = self.groups[key] = BaseGroup(key, model.eval())
        else:
            from tunesmith.models.load import load_tokenizer

            tokenizer = load_tokenizer(spec)
        entry = Entry(name, "causal_lm", "base", tokenizer, {"task": "causal_lm", "base_model": spec}, group=group,
                      source=source)
        self.entries[name] = entry
        return entry

    def add_run(self, name: str, path: str | Path) -> Entry:
        """Load a trained run (run dir or final/) under model id ``name``.

        Raises:
            ConfigError: bad name, name taken, or not a Tunesmith run.
        """
        from tunesmith.data.template_check import check_template
        from tunesmith.models.load import load_tokenizer, resolve_model_source
        from tunesmith.rundir import read_model_meta, resolve_final_dir, verify_model_folder

        self._check_new_name(name)
        final_dir, _ = resolve_final_dir(path)
        verify_model_folder(final_dir)
        meta = read_model_meta(final_dir)
        tokenizer = load_tokenizer(str(final_dir))
        check_template(final_dir, tokenizer, "serving")
        # An adapter that added tokens needs its own enlarged base: it cannot share one.
        if not method_info(meta["method"]).shareable or meta.get("vocab"):
            from tunesmith.methods.saved import load_trained

            model, tokenizer, meta = load_trained(final_dir)
            entry = Entry(name, meta["task"], meta["method"], tokenizer, meta, model=model, source=str(final_dir))
        else:
            source = resolve_model_source(meta.get("base_model_path") or meta["base_model"])
            peft_type = json.loads((final_dir / "adapter_config.json").read_text(encoding="utf-8"))["peft_type"]
            labels = meta.get("labels")
            quant = json.dumps(meta.get("quantization"), sort_keys=True) if meta.get("quantization") else None
            key = (source, meta["task"], len(labels) if labels else None, quant, peft_type)
            group = self._attach(key, meta, final_dir, name)
            entry = Entry(name, meta["task"], meta["method"], tokenizer, meta, group=group, source=str(final_dir))
        self.entries[name] = entry
        return entry

    def _attach(self, key: tuple, meta: dict, final_dir: Path, name: str) -> BaseGroup:
        from peft import PeftModel

        from tunesmith.models.load import load_model
        from tunesmith.models.quantize import four_bit_config

        group = self.groups.get(key)
        if group is None:
            labels = meta.get("labels")
            quantization = four_bit_config(**meta["quantization"]) if meta.get("quantization") else None
            model, _ = load_model(key[0], meta["task"], id2label=dict(enumerate(labels)) if labels else None,
                                  quantization=quantization)
            group = self.groups[key] = BaseGroup(key, model.eval())
        if group.peft is None:
            group.peft = PeftModel.from_pretrained(group.model, final_dir, adapter_name=name).eval()
        else:
            group.peft.load_adapter(final_dir, adapter_name=name)
        group.adapters.add(name)
        return group

    def remove(self, name: str) -> None:
        """Unload ``name``; a shared base leaves memory with its last user.

        Raises:
            KeyError: no such model id.
        """
        entry = self.entries.pop(name)
        group = entry.group
        if group is None:
            return
        if entry.method != "base":
            group.adapters.discard(name)
            if group.adapters:
                group.peft.set_adapter(sorted(group.adapters)[0])  # PEFT refuses to delete the active adapter
                group.peft.delete_adapter(name)
            else:  # the last adapter: take its layers out and keep the plain base
                group.model = group.peft.unload().eval()
                group.peft = None
        if not any(e.group is group for e in self.entries.values()):
            del self.groups[group.key]

    def _check_new_name(self, name: str) -> None:
        if not NAME_PATTERN.match(name):
            raise ConfigError(f"Invalid model name {name!r}.",
                              "Use 1-64 letters, digits, '.', '_', ':', '/' or '-', starting with a letter or digit.")
        if name in self.entries:
            raise ConfigError(f"A model named {name!r} is already loaded.", "Unload it first, or pick another name.")


def confined_path(path: str, allowed: list[Path]) -> Path:
    """``path`` resolved (symlinks followed) if it lies inside one of ``allowed``, and so does
    every file and folder below it once their own symlinks are followed (a run folder inside
    the allowed directory whose ``final`` links elsewhere is refused too).

    Raises:
        ConfigError: outside every allowed directory (e.g. ``../../etc``), or a NUL byte.
    """
    if "\x00" in path:
        raise ConfigError("The path contains a NUL byte.", "Send the run directory's path.")
    resolved = Path(path).expanduser().resolve()
    roots = [root.resolve() for root in allowed]
    below = list(resolved.rglob("*")) if resolved.is_dir() else []
    for candidate in [resolved, *below]:
        target = candidate.resolve()
        if not any(target.is_relative_to(root) for root in roots):
            shown = path if candidate == resolved else f"{path} ({candidate.relative_to(resolved)} -> {target})"
            raise ConfigError(f"{shown!r} is outside the directories adapters may be loaded from.",
                              f"Allowed: {', '.join(str(r) for r in allowed)} (server option --allow-dir).")
    return resolved

"""Back-translators: named functions that paraphrase texts, for ``data.augment.back_translation``.

A back-translator takes a list of texts and returns one paraphrase per text. A recipe
picks one by *name*; it can never name code to import, because recipes are untrusted
input (they come from the UI, the API, someone else's repository). Names come from:

- the built-ins below (``opus-mt:en-de`` and friends: round trips through MarianMT models);
- ``register_back_translator(name, fn)``, for Python API users;
- ``load_plugins(names)``: installed packages that declare an entry point in the group
  ``tunesmith.back_translators``, loaded only when the CLI user names them with
  ``--plugin NAME`` (the CLI user is trusted; the recipe is not).

Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points

from tunesmith.config.section import looks_like_import_path
from tunesmith.errors import ConfigError

BackTranslator = Callable[[list[str]], list[str]]

ENTRY_POINT_GROUP = "tunesmith.back_translators"

# Built-in round trips: name suffix -> (source language, pivot language, the pivot's
# language token). Each needs Helsinki-NLP/opus-mt-{source}-{pivot} and
# opus-mt-{pivot}-{source} on the hub. Multi-target models (English -> Chinese covers
# Mandarin, Cantonese, scripts) pick their output language from a leading ">>id<<" token.
OPUS_MT_ROUND_TRIPS: dict[str, tuple[str, str, str]] = {
    "en-de": ("en", "de", ">>deu<<"),
    "en-fr": ("en", "fr", ">>fra<<"),
    "en-zh": ("en", "zh", ">>cmn_Hans<<"),
    "zh-en": ("zh", "en", ">>eng<<"),
}
_SOURCE_TOKENS = {"en": ">>eng<<", "zh": ">>cmn_Hans<<"}
BATCH_SIZE = 16  # texts per generate() call: bounds memory on long lists
MAX_NEW_TOKENS = 256


@functools.lru_cache(maxsize=None)
def _marian(model_id: str):
    """Tokenizer and model of one MarianMT checkpoint, loaded once per process."""
    try:
        from transformers import MarianMTModel, MarianTokenizer

        tokenizer = MarianTokenizer.from_pretrained(model_id)
    except ImportError as exc:  # MarianTokenizer is a SentencePiece tokenizer
        raise ConfigError(f"Back-translation through {model_id} needs the sentencepiece package ({exc}).",
                          "Install it with 'pip install sentencepiece'.") from exc
    # Hub checkpoints without safetensors are read with torch.load(weights_only=True) by
    # transformers 5, so no pickle from the hub can run code here.
    model = MarianMTModel.from_pretrained(model_id).eval()
    import torch

    if torch.cuda.is_available():
        model = model.to("cuda")
    return tokenizer, model


def translate(model_id: str, texts: list[str], target_token: str = "") -> list[str]:
    """Translate ``texts`` with the MarianMT model ``model_id``, in batches of ``BATCH_SIZE``.

    ``target_token`` (e.g. ``">>cmn_Hans<<"``) is put in front of each text when the model
    lists it among its target languages (multi-target models need it; others ignore it).

    Raises:
        ConfigError: sentencepiece is not installed.
    """
    import torch

    tokenizer, model = _marian(model_id)
    prefix = f"{target_token} " if target_token in (getattr(tokenizer, "supported_language_codes", None) or []) else ""
    out: list[str] = []
    for start in range(0, len(texts), BATCH_SIZE):
        chunk = [prefix + t for t in texts[start : start + BATCH_SIZE]]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True).to(model.device)
        with torch.inference_mode():
            ids = model.generate(**enc, num_beams=4, max_new_tokens=MAX_NEW_TOKENS)
        out += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return out


def opus_mt_round_trip(source: str, pivot: str, pivot_token: str = "") -> BackTranslator:
    """A back-translator ``source -> pivot -> source`` through Helsinki-NLP's OPUS-MT models.

    The models are downloaded from the Hugging Face hub on first use (about 300 MB each)
    and kept in memory for the rest of the process; a machine without hub access (or a
    ``HF_HUB_OFFLINE`` cache lacking them) cannot run it. Needs ``sentencepiece``.
    """
    forward, backward = f"Helsinki-NLP/opus-mt-{source}-{pivot}", f"Helsinki-NLP/opus-mt-{pivot}-{source}"
    source_token = _SOURCE_TOKENS.get(source, "")

    def back_translate(texts: list[str]) -> list[str]:
        return translate(backward, translate(forward, list(texts), pivot_token), source_token)

    back_translate.__name__ = f"opus_mt_{source}_{pivot}_{source}"
    back_translate.__doc__ = (f"Paraphrase {source} texts by translating them to {pivot} and back "
                              f"({forward}, {backward}).")
    return back_translate


BACK_TRANSLATORS: dict[str, BackTranslator] = {
    f"opus-mt:{suffix}": opus_mt_round_trip(*spec) for suffix, spec in OPUS_MT_ROUND_TRIPS.items()
}
_LOADED_PLUGINS: list[str] = []


def register_back_translator(name: str, fn: BackTranslator) -> None:
    """Make ``fn`` (a list of texts -> one paraphrase each) usable as ``back_translation: NAME``.

    Registering a name again replaces the earlier function (handy in notebooks).

    Raises:
        ValueError: ``name`` is empty or has the shape of an import path (``pkg.mod:fn``),
            which recipes are not allowed to use.
        TypeError: ``fn`` is not callable.
    """
    if not isinstance(name, str) or not name.strip() or looks_like_import_path(name):
        raise ValueError(f"Back-translator name {name!r} is not allowed: use a plain name such as 'my-paraphraser' "
                         "(names shaped like 'package.module:function' are refused in recipes).")
    if not callable(fn):
        raise TypeError(f"Back-translator {name!r} must be a function taking a list of texts, not {type(fn).__name__}.")
    BACK_TRANSLATORS[name] = fn


def get_back_translator(name: str) -> BackTranslator:
    """The back-translator registered as ``name``.

    Raises:
        ConfigError: no back-translator has that name; the message lists the available ones.
    """
    try:
        return BACK_TRANSLATORS[name]
    except KeyError:
        available = ", ".join(sorted(BACK_TRANSLATORS)) or "none"
        raise ConfigError(
            f"data.augment.back_translation {name!r} is not a known back-translator (available: {available}).",
            f"Pick one of those, load an installed one with 'tunesmith ... --plugin NAME' (entry point group "
            f"'{ENTRY_POINT_GROUP}'), or register one in Python with register_back_translator().") from None


def load_plugins(names: Iterable[str]) -> list[str]:
    """Register the installed back-translators called ``names`` (from ``--plugin``); return them.

    Only entry points of group ``tunesmith.back_translators`` whose names are given are
    loaded: having a package installed never runs its code by itself, and the names come
    from the CLI user, never from a recipe.

    Raises:
        ConfigError: a name has no entry point, or its entry point fails to load, is not a
            function or has a name shaped like an import path.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    missing = [name for name in wanted if name not in found]
    if missing:
        installed = ", ".join(sorted(found)) or "none"
        raise ConfigError(f"--plugin {', '.join(missing)}: no installed package provides a back-translator of that "
                          f"name (installed: {installed}).",
                          f"A package provides one with an entry point in the group '{ENTRY_POINT_GROUP}'.")
    for name in wanted:
        try:
            fn = found[name].load()
        except Exception as exc:  # noqa: BLE001 - any failure of third-party code is reported alike
            raise ConfigError(f"--plugin {name}: loading {found[name].value} failed ({exc}).") from exc
        try:
            register_back_translator(name, fn)
        except (TypeError, ValueError) as exc:  # not a function, or a name shaped like an import path
            raise ConfigError(f"--plugin {name}: {found[name].value} cannot be used ({exc}).") from exc
        if name not in _LOADED_PLUGINS:
            _LOADED_PLUGINS.append(name)
    return wanted


def loaded_plugins() -> list[str]:
    """Names loaded by ``load_plugins`` in this process (``compare`` passes them to its runs)."""
    return list(_LOADED_PLUGINS)

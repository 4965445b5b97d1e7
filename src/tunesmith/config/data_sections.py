"""The data sections of a recipe that are not the data section itself: sources, cleaning,
deduplication and augmentation (kept apart so ``schema.py`` stays one screenful per section)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from tunesmith.config.section import Section, looks_like_import_path


class SourceConfig(Section):
    path: str = Field(description="'builtin:<name>' or a file (.jsonl/.json/.csv/.tsv), relative to the recipe.")
    weight: float | None = Field(
        None,
        gt=0,
        description="Share of this source in the mixed training set (needs data.mix_total). "
        "E.g. weights 1 and 5 give domain : general = 1 : 5.",
    )


def as_sources(value):
    """Accept the short forms ``train: builtin:x`` and ``train: [builtin:x, file.jsonl]``
    (anything else is left for the validator to refuse with its own message)."""
    if value is None:
        return value
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        return value
    return [{"path": v} if isinstance(v, str) else v for v in value]


class CleanConfig(Section):
    nfkc: bool = Field(True, description="Unicode NFKC normalisation (full-width to ASCII, ligatures, ...).")
    whitespace: bool = Field(True, description="Collapse runs of spaces, trim lines, at most one blank line.")
    control_chars: bool = Field(True, description="Remove control and zero-width characters (tab/newline kept).")
    html: bool = Field(False, description="Strip HTML tags, scripts and styles; unescape entities.")
    fillers: bool = Field(False, description="Remove filler words: um, uh, erm, hmm; 嗯, 呃, 啊, 那个, 就是说.")
    mask_pii: bool = Field(False, description="Replace e-mail addresses, phone numbers and Chinese ID-card numbers "
                                              "with [EMAIL], [PHONE], [ID].")
    min_chars: int | None = Field(None, ge=0, description="Drop rows with fewer characters after cleaning.")
    max_chars: int | None = Field(None, ge=1, description="Drop rows with more characters after cleaning.")

    @model_validator(mode="after")
    def _bounds_in_order(self):
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"data.clean.min_chars ({self.min_chars}) is above data.clean.max_chars "
                             f"({self.max_chars}): every row would be dropped")
        return self


class DedupConfig(Section):
    exact: bool = Field(True, description="Drop rows whose normalised text repeats an earlier row.")
    near: bool = Field(False, description="Also drop near duplicates (MinHash LSH over character n-grams).")
    threshold: float = Field(0.8, gt=0, lt=1, description="Estimated Jaccard similarity that counts as a near duplicate.")
    ngram: int = Field(5, ge=1, le=20, description="Character n-gram size (works for text without spaces, e.g. Chinese).")


class AugmentConfig(Section):
    copies: int = Field(1, ge=1, le=16, description="Augmented copies of each training row.")
    synonym_rate: float = Field(0.1, ge=0, le=1, description="EDA: share of words with synonyms to replace.")
    swap_rate: float = Field(0.0, ge=0, le=1, description="EDA: random swaps, as a share of the words.")
    delete_rate: float = Field(0.0, ge=0, le=1, description="EDA: chance to delete each word.")
    back_translation: str | None = Field(
        None, description="Name of a registered back-translator that paraphrases each text, applied before the "
        "EDA steps: built-in 'opus-mt:en-de', 'opus-mt:en-fr', 'opus-mt:en-zh', 'opus-mt:zh-en' (round trips "
        "through OPUS-MT models from the hub), one loaded with the CLI's --plugin NAME, or one registered in "
        "Python with tunesmith.data.paraphrase.register_back_translator. Never a path to code to import.")

    @field_validator("back_translation")
    @classmethod
    def _no_import_paths(cls, value: str | None) -> str | None:
        # Recipes are untrusted: a value shaped like 'package.module:function' is refused here,
        # before anything runs, instead of being looked up (the registry refuses such names too).
        if value is not None and looks_like_import_path(value):
            raise ValueError(
                f"{value!r} looks like an import path, and recipes cannot name code to import. Use the name of a "
                "registered back-translator: a built-in (e.g. 'opus-mt:en-de'), an installed plugin loaded with "
                "'--plugin NAME', or a function registered in Python with register_back_translator().")
        return value


class LastTurnsConfig(Section):
    last_n_turns: int = Field(..., ge=1, description="Exchanges (a user turn and its answer) kept from the end "
                              "of every chat; the system prompt always stays.")


class ExpandVocabConfig(Section):
    corpus: str | None = Field(
        None, description="Where to mine new tokens: a dataset spec read in the run's data shape (texts, chats' "
        "messages, pairs' strings); default the recipe's training sources.")
    max_new_tokens: int = Field(100, ge=1, description="At most this many new tokens, those saving the most pieces.")
    min_freq: int = Field(5, ge=1, description="A word must occur this often in the corpus.")
    min_pieces: int = Field(3, ge=2, description="... and be split into at least this many pieces today.")

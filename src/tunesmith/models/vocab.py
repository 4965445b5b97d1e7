"""Vocabulary expansion: new tokens for domain words and Chinese terms (``model.add_tokens``,
``model.expand_vocab``).

A tokenizer trained on other text splits a domain's frequent words into many pieces,
which costs context and, above all, decoding steps. Expansion:

1. mines the corpus for frequent words (jieba segments Chinese; other scripts split on
   word characters) that the tokenizer cuts into ``min_pieces`` or more pieces, ranked by
   the tokens they would save (frequency x (pieces - 1));
2. adds them (and ``add_tokens``) to the tokenizer, before the data is tokenized;
3. resizes the embeddings to a multiple of 64 and starts each new input (and, when not
   tied, output) row as the mean of the rows of the pieces it replaces, so a new token
   first means what its pieces meant together;
4. trains only the new rows besides the method (PEFT's ``trainable_token_indices`` with
   LoRA, at ``model.new_tokens_lr_scale`` times the rate: a row gets a gradient only where
   its token occurs; full fine-tuning trains every row anyway).

``tunesmith.json`` records the new tokens with their pieces, so loading a run rebuilds the
base's enlarged embeddings exactly as training started from them.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field

import torch

PAD_MULTIPLE = 64
_HAN = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"[^\W\d_][\w'-]*[^\W_]|[^\W\d_]{2,}", re.UNICODE)


@dataclass
class NewTokens:
    """What expansion added: each token with the ids of the pieces it replaces."""

    tokens: list[str] = field(default_factory=list)
    pieces: list[list[int]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    mined: list[dict] = field(default_factory=list)  # term, count, pieces (for the summary)
    rows: int | None = None  # embedding rows after resizing
    tokenizer_size: int | None = None

    def as_meta(self) -> dict:
        return {"tokens": self.tokens, "pieces": self.pieces, "ids": self.ids, "rows": self.rows,
                "tokenizer_size": self.tokenizer_size}


def segment(text: str) -> list[str]:
    """Words of ``text``: jieba's segmentation for Chinese runs, word characters elsewhere."""
    words: list[str] = []
    for run in re.split(r"([\u3400-\u9fff]+)", text):
        if not run:
            continue
        if _HAN.match(run):
            import jieba

            words += [w for w in jieba.lcut(run) if len(w) >= 2]
        else:
            words += _WORD.findall(run)
    return words


def mine_terms(texts, tokenizer, max_new_tokens: int, min_freq: int, min_pieces: int = 3) -> list[dict]:
    """The corpus words most worth a token of their own: at least ``min_freq`` occurrences,
    at least ``min_pieces`` pieces today, ranked by pieces saved (count x (pieces - 1))."""
    _quiet_jieba()
    counts = collections.Counter(w for text in texts for w in segment(text))
    vocab = tokenizer.get_vocab()
    found = []
    for word, count in counts.items():
        if count < min_freq or word in vocab:
            continue
        pieces = len(tokenizer(word, add_special_tokens=False)["input_ids"])
        if pieces >= min_pieces:
            found.append({"term": word, "count": count, "pieces": pieces, "saves": count * (pieces - 1)})
    found.sort(key=lambda t: (-t["saves"], t["term"]))
    return found[:max_new_tokens]


def add_to_tokenizer(tokenizer, terms: list[str]) -> NewTokens:
    """Add ``terms`` (those not yet tokens) to ``tokenizer``; remember the pieces each replaces."""
    from tokenizers import AddedToken

    added = NewTokens()
    vocab = tokenizer.get_vocab()
    for term in dict.fromkeys(terms):
        if term in vocab:
            continue
        added.tokens.append(term)
        added.pieces.append(tokenizer(term, add_special_tokens=False)["input_ids"])
    # Latin words only as whole words ("cat" must not match inside "category"); Chinese has
    # no word boundaries to respect.
    tokenizer.add_tokens([AddedToken(t, single_word=not _HAN.search(t), normalized=False) for t in added.tokens])
    added.ids = tokenizer.convert_tokens_to_ids(added.tokens)
    added.tokenizer_size = len(tokenizer)
    return added


def embedding_rows(tokenizer_size: int) -> int:
    """The embedding rows :func:`resize_embeddings` gives ``tokenizer_size`` tokens (a multiple of 64)."""
    return -(-tokenizer_size // PAD_MULTIPLE) * PAD_MULTIPLE


def resize_embeddings(model, added: NewTokens, tokenizer_size: int) -> int:
    """Resize ``model``'s embeddings for ``tokenizer_size`` tokens (rounded up to a multiple
    of 64) and start each new token's rows as the mean of its pieces' rows; returns the rows.

    Rows no token uses (the rounding) start as the mean of the old rows. Every new row is
    set here, deterministically, so a reload rebuilds the same matrix (transformers' own
    initialisation of new rows is random).
    """
    inputs = model.get_input_embeddings().weight
    outputs = model.get_output_embeddings()
    tied = outputs is None or outputs.weight.data_ptr() == inputs.data_ptr()
    old = inputs.shape[0]
    model.resize_token_embeddings(tokenizer_size, pad_to_multiple_of=PAD_MULTIPLE, mean_resizing=False)
    matrices = [model.get_input_embeddings().weight]
    if not tied:
        matrices.append(model.get_output_embeddings().weight)
    with torch.no_grad():
        for weight in matrices:
            weight[old:] = weight[:old].mean(dim=0)
            for token_id, pieces in zip(added.ids, added.pieces):
                weight[token_id] = weight[pieces].mean(dim=0)
        head = model.get_output_embeddings()
        if head is not None and getattr(head, "bias", None) is not None and head.bias.shape[0] > old:
            head.bias[old:] = head.bias[:old].mean()
    added.rows = model.get_input_embeddings().weight.shape[0]
    return added.rows


def rebuild(model, meta_vocab: dict) -> None:
    """Give a freshly loaded base the enlarged embeddings a run started from (its
    ``tunesmith.json`` ``vocab``): same size, same starting rows."""
    added = NewTokens(tokens=meta_vocab["tokens"], pieces=meta_vocab["pieces"], ids=meta_vocab["ids"])
    resize_embeddings(model, added, meta_vocab["tokenizer_size"])


def corpus_texts(rows: list[dict]) -> list[str]:
    """The text of every row: a text field, or a chat's message contents, or a pair's strings."""
    texts = []
    for row in rows:
        if isinstance(row.get("text"), str):
            texts.append(row["text"])
        for message in row.get("messages") or []:
            texts.append(str(message.get("content", "")))
        texts += [row[k] for k in ("prompt", "chosen", "rejected", "response") if isinstance(row.get(k), str)]
    return texts


def expand_tokenizer(config, tokenizer, shape: str, base_dir, log=print) -> NewTokens | None:
    """Add the recipe's new tokens (``model.add_tokens`` and the mined ``model.expand_vocab``
    words) to ``tokenizer``; None when the recipe asks for none."""
    model_cfg, data = config.model, config.data
    if not (model_cfg.add_tokens or model_cfg.expand_vocab):
        return None
    terms, mined = list(model_cfg.add_tokens), []
    if model_cfg.expand_vocab:
        from tunesmith.data.sources import load_records

        cfg = model_cfg.expand_vocab
        specs = [cfg.corpus] if cfg.corpus else [source.path for source in data.train]
        rows = [row for spec in specs for row in load_records(
            spec, shape, base_dir=base_dir, text_field=data.text_field, label_field=data.label_field,
            on_error="drop", rejects=[], text_delimiter=data.text_delimiter, messages_field=data.messages_field)]
        mined = mine_terms(corpus_texts(rows), tokenizer, cfg.max_new_tokens, cfg.min_freq, cfg.min_pieces)
        terms += [m["term"] for m in mined]
    added = add_to_tokenizer(tokenizer, terms)
    added.mined = mined
    log(f"vocabulary: {len(added.tokens)} new tokens" + (f" ({len(mined)} mined, e.g. "
        + ", ".join(m["term"] for m in mined[:5]) + ")" if mined else ""))
    return added


def summary_of(added: NewTokens) -> dict:
    """What the run summary records: the new tokens (with their old piece counts) and rows."""
    return {"added": len(added.tokens), "rows": added.rows, "terms": added.mined[:50] or
            [{"term": t, "pieces": len(p)} for t, p in zip(added.tokens[:50], added.pieces)]}


def _quiet_jieba() -> None:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)



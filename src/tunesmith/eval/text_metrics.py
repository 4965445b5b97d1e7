"""Generation metrics on plain strings, for English and Chinese answers alike.

Each example's script is decided by its **reference** (:func:`is_chinese`), so two
systems answering the same question are always scored in the same units, whatever they
wrote. The script picks, per example:

- **BLEU-4** (sacrebleu): tokenizer ``zh`` for Chinese, ``13a`` otherwise. A corpus score
  is computed from per-example sufficient statistics summed over the corpus (what
  sacrebleu's own paired bootstrap does), so one corpus may mix both tokenizers; on a
  one-script corpus it equals ``sacrebleu.corpus_bleu`` exactly. **chrF** is character
  based and has no tokenizer, so it is the same computation for both scripts.
- **ROUGE-1/2/L F1**. English: Google's ``rouge-score`` with the Porter stemmer, the
  reference implementation most papers report (its tokenizer keeps only ``[a-z0-9]``
  runs, so it would score any Chinese text as empty). Chinese: words from ``jieba``, scored
  by ``rouge-chinese`` — Chinese has no spaces, and ROUGE on jieba words is the usual
  choice for Chinese summarisation (LCSTS, CLUE). Two of its definitions differ from
  ``rouge-score``: ROUGE-N counts *distinct* n-grams (a repeated word is matched once), and
  ROUGE-L is its "summary-level" LCS: the text is split into sentences at 。！？ and the
  LCS is taken over the sentences' words joined in order.
- **Exact match and token F1** with SQuAD v1.1 normalisation (lowercase, drop
  punctuation and the articles a/an/the, collapse whitespace). English tokens are words;
  Chinese tokens are single CJK characters (Latin runs inside Chinese text stay words), and
  Chinese punctuation is dropped too — character-level F1 as in CMRC 2018.

Scales follow the libraries: BLEU and chrF 0-100, everything else 0-1. An empty prediction
scores 0 on every metric (exact match is 1 only when the reference is empty too).
The libraries are imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Sequence

import numpy as np

# CJK Unified Ideographs, extension A, compatibility ideographs, extensions B-G.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef\U00030000-\U0003134f"
_CJK_CHAR = re.compile(f"[{_CJK}]")
# Chinese tokens for EM/F1: one CJK character each, or a run of anything else but spaces.
_ZH_TOKEN = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = set(string.punctuation)

# A text is Chinese when at least this share of its letters are CJK ideographs. Letters
# (Unicode category L*: Latin, Cyrillic, kana, ideographs) rather than all characters, so
# digits and punctuation are neutral: "2008年" and "1949年10月1日" are Chinese answers, while
# "Python 3.11" is not. Chinese prose with a few Latin words passes ("我用Python写代码":
# 5 of 11 letters); English with a quoted Chinese name does not ("The 北京 Olympics": 2 of 13).
CHINESE_THRESHOLD = 0.3

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def is_chinese(text: str) -> bool:
    """True when CJK ideographs are at least :data:`CHINESE_THRESHOLD` (30%) of the text's
    letters; digits, punctuation and spaces do not count. A text without letters is not
    Chinese."""
    letters = [c for c in text if unicodedata.category(c).startswith("L")]
    if not letters:
        return False
    return len(_CJK_CHAR.findall("".join(letters))) / len(letters) >= CHINESE_THRESHOLD


def bleu_tokenizer(reference: str) -> str:
    """The sacrebleu tokenizer for an example with this reference: ``zh`` or ``13a``."""
    return "zh" if is_chinese(reference) else "13a"


def _check_pairs(preds: Sequence[str], refs: Sequence[str]) -> None:
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions but {len(refs)} references")


# --- BLEU and chrF from sufficient statistics ---------------------------------------------


@lru_cache(maxsize=None)
def _bleu(tokenize: str):
    from sacrebleu.metrics import BLEU

    # The defaults of sacrebleu.corpus_bleu (exp smoothing, no effective order), so a
    # one-script corpus scores exactly as sacrebleu does.
    return BLEU(tokenize=tokenize)


@lru_cache(maxsize=None)
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


def bleu_stats(preds: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """Per-example BLEU sufficient statistics, an ``n x 10`` array: hypothesis length,
    closest reference length, matched n-grams for n = 1..4, hypothesis n-grams for n = 1..4.

    Each row is tokenized by its reference's script (:func:`bleu_tokenizer`); the rows share
    one layout whatever the tokenizer, so they can be summed across a mixed corpus.
    """
    _check_pairs(preds, refs)
    stats = np.zeros((len(preds), 10))
    groups: dict[str, list[int]] = {}
    for i, ref in enumerate(refs):
        groups.setdefault(bleu_tokenizer(ref), []).append(i)
    for tokenize, rows in groups.items():
        # One call per tokenizer: sacrebleu caches each reference's n-grams once.
        found = _bleu(tokenize)._extract_corpus_statistics([preds[i] for i in rows], [[refs[i] for i in rows]])
        stats[rows] = np.asarray(found, dtype=float)
    return stats


def bleu_from_stats(stats_sum: Sequence[float], n: int | None = None) -> float:
    """Corpus BLEU (0-100) from BLEU statistics summed over examples.

    ``n`` (the number of examples) is ignored; it is accepted so this function can be passed
    straight to :func:`tunesmith.eval.bootstrap.bootstrap_ci` as ``aggregate``.
    """
    # A copy as a list: sacrebleu's add-k smoothing writes into the counts it is given.
    return float(_bleu("13a")._compute_score_from_stats([float(x) for x in stats_sum]).score)


def corpus_bleu(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus BLEU-4 (0-100), each example tokenized by its reference's script."""
    if not preds:
        raise ValueError("no examples to score")
    return bleu_from_stats(bleu_stats(preds, refs).sum(axis=0))


def chrf_stats(preds: Sequence[str], refs: Sequence[str]) -> np.ndarray:
    """Per-example chrF sufficient statistics, ``n x 18``: (hypothesis, reference, matched)
    character n-gram counts for n = 1..6. chrF reads characters, so no tokenizer is involved."""
    _check_pairs(preds, refs)
    if not preds:
        return np.zeros((0, 18))
    return np.asarray(_chrf()._extract_corpus_statistics(list(preds), [list(refs)]), dtype=float)


def chrf_from_stats(stats_sum: Sequence[float], n: int | None = None) -> float:
    """Corpus chrF (0-100) from chrF statistics summed over examples (``n`` ignored, as in
    :func:`bleu_from_stats`)."""
    return float(_chrf()._compute_score_from_stats([float(x) for x in stats_sum]).score)


def corpus_chrf(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus chrF (0-100), equal to ``sacrebleu.corpus_chrf``."""
    if not preds:
        raise ValueError("no examples to score")
    return chrf_from_stats(chrf_stats(preds, refs).sum(axis=0))


# --- ROUGE -------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _rouge_english():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)


@lru_cache(maxsize=None)
def _jieba():
    import logging

    import jieba

    # jieba logs "Building prefix dict ..." to stderr on first use; nothing to act on.
    jieba.setLogLevel(logging.WARNING)
    return jieba


def chinese_words(text: str) -> str:
    """``text`` as jieba words separated by spaces (the input rouge-chinese expects)."""
    # jieba returns spaces and newlines as words of their own; rouge-chinese would turn a
    # blank line into an empty-string "word", so they are dropped here.
    return " ".join(w for w in _jieba().cut(text) if not w.isspace())


def rouge_scores(pred: str, ref: str) -> dict[str, float]:
    """ROUGE-1, ROUGE-2 and ROUGE-L F1 (0-1) of one prediction against one reference:
    ``rouge-score`` with stemming for English, jieba words and ``rouge-chinese`` for Chinese."""
    zero = dict.fromkeys(ROUGE_KEYS, 0.0)
    if not pred.strip():
        return zero
    if not is_chinese(ref):
        scores = _rouge_english().score(ref, pred)  # rouge-score takes (target, prediction)
        return {key: float(scores[key].fmeasure) for key in ROUGE_KEYS}
    hyp, target = chinese_words(pred), chinese_words(ref)
    if not hyp or not target:
        return zero  # rouge-chinese raises on an empty side
    from rouge_chinese import Rouge

    scores = Rouge().get_scores(hyp, target)[0]
    return {"rouge1": scores["rouge-1"]["f"], "rouge2": scores["rouge-2"]["f"], "rougeL": scores["rouge-l"]["f"]}


# --- exact match and token F1 ----------------------------------------------------------


def _is_punct(char: str) -> bool:
    return char in _ASCII_PUNCT or unicodedata.category(char).startswith("P")


def answer_tokens(text: str, chinese: bool) -> list[str]:
    """SQuAD-normalised tokens: lowercase, punctuation and articles removed. English:
    whitespace words (``string.punctuation`` removed, exactly as SQuAD v1.1). Chinese: every
    CJK character is a token, other runs are words, and Unicode punctuation (，。“” …) is
    removed as well."""
    text = text.lower()
    if chinese:
        text = "".join(c for c in text if not _is_punct(c))
    else:
        text = "".join(c for c in text if c not in _ASCII_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return _ZH_TOKEN.findall(text) if chinese else text.split()


def exact_match(pred: str, ref: str) -> float:
    """1.0 when the normalised prediction equals the normalised reference, else 0.0."""
    chinese = is_chinese(ref)
    return float(answer_tokens(pred, chinese) == answer_tokens(ref, chinese))


def token_f1(pred: str, ref: str) -> float:
    """SQuAD v1.1 token F1 (0-1): harmonic mean of token precision and recall, counting
    repeated tokens at most as often as the other side has them. As in the official
    script, no shared token (an empty side included) gives 0."""
    chinese = is_chinese(ref)
    pred_tokens, ref_tokens = answer_tokens(pred, chinese), answer_tokens(ref, chinese)
    same = sum((Counter(pred_tokens) & Counter(ref_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def answer_length(pred: str, ref: str) -> int:
    """Length of the prediction: whitespace words for an English example, non-space
    characters for a Chinese one (where words are not marked)."""
    if is_chinese(ref):
        return sum(1 for c in pred if not c.isspace())
    return len(pred.split())


def per_example_scores(pred: str, ref: str) -> dict[str, float]:
    """Every generation metric of one example.

    Returns ``bleu`` and ``chrf`` (sacrebleu's sentence scores, 0-100: BLEU with the
    per-script tokenizer and sacrebleu's sentence defaults, i.e. effective order),
    ``rouge1``, ``rouge2``, ``rougeL``, ``exact_match``, ``token_f1`` (0-1) and ``length``
    (:func:`answer_length`). Sentence BLEU is for inspecting examples; the corpus score is
    :func:`corpus_bleu`, not the mean of these.
    """
    import sacrebleu

    if pred.strip():
        bleu = float(sacrebleu.sentence_bleu(pred, [ref], tokenize=bleu_tokenizer(ref)).score)
        chrf = float(sacrebleu.sentence_chrf(pred, [ref]).score)
    else:
        bleu = chrf = 0.0
    return {
        "bleu": bleu,
        "chrf": chrf,
        **rouge_scores(pred, ref),
        "exact_match": exact_match(pred, ref),
        "token_f1": token_f1(pred, ref),
        "length": answer_length(pred, ref),
    }

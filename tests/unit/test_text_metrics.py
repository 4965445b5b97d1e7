"""Generation metrics against the libraries and scripts they stand for: sacrebleu's corpus
BLEU/chrF, rouge-score and rouge-chinese called directly, and SQuAD v1.1's official EM/F1."""

from __future__ import annotations

import re
import string
import subprocess
import sys
from collections import Counter

import jieba
import numpy as np
import pytest
import sacrebleu
from rouge_chinese import Rouge
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU

from tunesmith.eval import text_metrics as tm

EN_PREDS = [
    "The cat sat on the mat near the door.",
    "A quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "He went to the market to buy some fresh apples and bread.",
]
EN_REFS = [
    "The cat was sitting on the mat by the door.",
    "The quick brown fox jumped over the lazy dog.",
    "The capital of France is Paris.",
    "He went to the market to buy fresh apples.",
]
ZH_PREDS = [
    "北京是中国的首都，也是一座历史悠久的城市。",
    "今天天气很好，我们去公园散步吧。",
    "机器学习是人工智能的一个分支。",
    "他昨天买了三本书。",
]
ZH_REFS = [
    "中国的首都是北京，这是一座历史悠久的城市。",
    "今天天气不错，我们一起去公园散步。",
    "机器学习是人工智能的重要分支。",
    "他昨天在书店买了三本新书。",
]


# --- script detection --------------------------------------------------------------------


@pytest.mark.parametrize("text, chinese", [
    ("北京大学是一所大学。", True),
    ("我用Python写代码", True),  # 5 of 11 letters are ideographs
    ("2008年", True),  # digits are neutral: 1 of 1 letters
    ("The 北京 Olympics", False),  # 2 of 13
    ("Python 3.11", False),
    ("hello world", False),
    ("。！", False),  # no letters at all
    ("", False),
])
def test_is_chinese_counts_ideographs_among_letters(text, chinese):
    assert tm.is_chinese(text) is chinese


# --- BLEU and chrF -----------------------------------------------------------------------


def test_english_corpus_equals_sacrebleu_13a():
    assert tm.corpus_bleu(EN_PREDS, EN_REFS) == pytest.approx(
        sacrebleu.corpus_bleu(EN_PREDS, [EN_REFS], tokenize="13a").score, abs=1e-6)
    assert tm.corpus_chrf(EN_PREDS, EN_REFS) == pytest.approx(sacrebleu.corpus_chrf(EN_PREDS, [EN_REFS]).score, abs=1e-6)
    assert 10 < tm.corpus_bleu(EN_PREDS, EN_REFS) < 90  # a real partial match, not a degenerate 0 or 100


def test_chinese_corpus_equals_sacrebleu_zh():
    expected = sacrebleu.corpus_bleu(ZH_PREDS, [ZH_REFS], tokenize="zh").score
    assert tm.corpus_bleu(ZH_PREDS, ZH_REFS) == pytest.approx(expected, abs=1e-6)
    assert tm.corpus_chrf(ZH_PREDS, ZH_REFS) == pytest.approx(sacrebleu.corpus_chrf(ZH_PREDS, [ZH_REFS]).score, abs=1e-6)
    # The tokenizer matters: 13a leaves each Chinese clause one "word", and the score collapses.
    assert sacrebleu.corpus_bleu(ZH_PREDS, [ZH_REFS], tokenize="13a").score < expected - 10


def test_mixed_corpus_sums_per_script_statistics_in_order():
    preds = [EN_PREDS[0], ZH_PREDS[0], EN_PREDS[1], ZH_PREDS[1]]
    refs = [EN_REFS[0], ZH_REFS[0], EN_REFS[1], ZH_REFS[1]]
    stats = tm.bleu_stats(preds, refs)
    assert stats.shape == (4, 10)
    for i, (pred, ref) in enumerate(zip(preds, refs)):
        tokenize = "zh" if i % 2 else "13a"
        assert stats[i].tolist() == BLEU(tokenize=tokenize)._extract_corpus_statistics([pred], [[ref]])[0]
    summed = stats.sum(axis=0)
    expected = BLEU(tokenize="13a")._compute_score_from_stats([int(x) for x in summed]).score
    assert tm.corpus_bleu(preds, refs) == pytest.approx(expected, abs=1e-6)
    assert tm.bleu_from_stats(summed) == pytest.approx(expected, abs=1e-6)
    chrf_summed = tm.chrf_stats(preds, refs).sum(axis=0)
    assert tm.corpus_chrf(preds, refs) == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score, abs=1e-6)
    assert tm.chrf_from_stats(chrf_summed) == pytest.approx(tm.corpus_chrf(preds, refs), abs=1e-6)


def test_bleu_rejects_mismatched_lengths_and_empty_corpora():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        tm.bleu_stats(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no examples"):
        tm.corpus_bleu([], [])


def test_sentence_bleu_and_chrf_use_the_reference_script():
    zh = tm.per_example_scores(ZH_PREDS[2], ZH_REFS[2])
    assert zh["bleu"] == pytest.approx(sacrebleu.sentence_bleu(ZH_PREDS[2], [ZH_REFS[2]], tokenize="zh").score, abs=1e-6)
    assert zh["chrf"] == pytest.approx(sacrebleu.sentence_chrf(ZH_PREDS[2], [ZH_REFS[2]]).score, abs=1e-6)
    en = tm.per_example_scores(EN_PREDS[3], EN_REFS[3])
    assert en["bleu"] == pytest.approx(sacrebleu.sentence_bleu(EN_PREDS[3], [EN_REFS[3]], tokenize="13a").score, abs=1e-6)
    assert en["bleu"] > 30


# --- ROUGE -------------------------------------------------------------------------------


@pytest.mark.parametrize("i", range(len(EN_PREDS)))
def test_english_rouge_equals_rouge_score(i):
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = scorer.score(EN_REFS[i], EN_PREDS[i])
    got = tm.rouge_scores(EN_PREDS[i], EN_REFS[i])
    for key in ("rouge1", "rouge2", "rougeL"):
        assert got[key] == pytest.approx(expected[key].fmeasure, abs=1e-6)
    assert 0 < got["rouge2"] < got["rouge1"] <= 1  # example 2 reorders the same words: ROUGE-1 is 1


@pytest.mark.parametrize("i", range(len(ZH_PREDS)))
def test_chinese_rouge_equals_rouge_chinese_on_jieba_words(i):
    hyp, ref = " ".join(jieba.cut(ZH_PREDS[i])), " ".join(jieba.cut(ZH_REFS[i]))
    expected = Rouge().get_scores(hyp, ref)[0]
    got = tm.rouge_scores(ZH_PREDS[i], ZH_REFS[i])
    assert got["rouge1"] == pytest.approx(expected["rouge-1"]["f"], abs=1e-6)
    assert got["rouge2"] == pytest.approx(expected["rouge-2"]["f"], abs=1e-6)
    assert got["rougeL"] == pytest.approx(expected["rouge-l"]["f"], abs=1e-6)
    assert 0 < got["rouge2"] < got["rouge1"] < 1


def test_chinese_rouge_reads_jieba_words_and_counts_distinct_ngrams():
    assert tm.chinese_words("我爱北京天安门") == "我 爱 北京 天安门"
    assert tm.chinese_words("你好\n\n世界") == "你好 世界"  # no empty-string "word" for a blank line
    # rouge-chinese's ROUGE-N matches distinct n-grams (the documented difference from
    # rouge-score): 北京 北京 ， 上海 and 北京 ， 上海 上海 share every distinct word.
    got = tm.rouge_scores("北京北京，上海", "北京，上海上海")
    assert got["rouge1"] == pytest.approx(1.0, abs=1e-6)
    assert got["rougeL"] == pytest.approx(0.75, abs=1e-6)  # LCS 北京 ， 上海: 3 of 4 words each side


def test_rouge_of_an_empty_or_blank_prediction_is_zero_without_the_library():
    assert tm.rouge_scores("", ZH_REFS[0]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert tm.rouge_scores(" \n ", ZH_REFS[0]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert tm.rouge_scores("", EN_REFS[0]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    with pytest.raises(ValueError, match="Hypothesis is empty"):  # what the guard protects against
        Rouge().get_scores("", "我 爱 北京")


# --- exact match and token F1 -------------------------------------------------------------


def squad_normalize(s):
    """normalize_answer of the official SQuAD v1.1 evaluate script."""
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def squad_f1(prediction, ground_truth):
    prediction_tokens = squad_normalize(prediction).split()
    ground_truth_tokens = squad_normalize(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def squad_em(prediction, ground_truth):
    return squad_normalize(prediction) == squad_normalize(ground_truth)


SQUAD_CASES = [
    ("The Eiffel Tower", "Eiffel tower"),
    ("in 1889, Paris!", "1889"),
    ("an apple a day", "apple day"),
    ("the the cat cat cat", "a cat sat"),
    ("Denver Broncos", "Carolina Panthers"),
    ("theatre", "the atre"),  # "the" removed only as a whole word
    ("", "something"),
    ("", ""),
]


@pytest.mark.parametrize("pred, ref", SQUAD_CASES)
def test_english_em_and_f1_follow_the_squad_script(pred, ref):
    assert tm.exact_match(pred, ref) == float(squad_em(pred, ref))
    assert tm.token_f1(pred, ref) == pytest.approx(squad_f1(pred, ref), abs=1e-9)


def test_squad_cases_are_not_trivial():
    assert [tm.exact_match(p, r) for p, r in SQUAD_CASES] == [1, 0, 1, 0, 0, 0, 0, 1]
    assert tm.token_f1("the the cat cat cat", "a cat sat") == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))


@pytest.mark.parametrize("pred, ref, em, f1", [
    ("北京大学。", "北京大学", 1.0, 1.0),  # Chinese punctuation is dropped
    ("“北京”，大学！", "北京 大学", 1.0, 1.0),  # spaces between characters do not matter
    ("北京的大学", "北京大学", 0.0, 8 / 9),  # P = 4/5, R = 4/4
    ("用Python写", "我用python写代码", 0.0, 2 / 3),  # tokens 用 python 写 of 我 用 python 写 代 码
    ("2008年", "2008年。", 1.0, 1.0),
    ("上海", "北京", 0.0, 0.0),
])
def test_chinese_em_and_f1_are_character_level(pred, ref, em, f1):
    assert tm.exact_match(pred, ref) == em
    assert tm.token_f1(pred, ref) == pytest.approx(f1)


def test_answer_tokens_split_ideographs_and_keep_latin_words():
    assert tm.answer_tokens("我用Python 3写代码！", chinese=True) == ["我", "用", "python", "3", "写", "代", "码"]
    assert tm.answer_tokens("The cat, a dog.", chinese=False) == ["cat", "dog"]


# --- per-example scores ------------------------------------------------------------------


def test_per_example_scores_has_every_metric_and_lengths_by_script():
    en = tm.per_example_scores("the cat sat", "a cat sat down")
    assert set(en) == {"bleu", "chrf", "rouge1", "rouge2", "rougeL", "exact_match", "token_f1", "length"}
    assert en["length"] == 3
    assert en["token_f1"] == pytest.approx(squad_f1("the cat sat", "a cat sat down"))
    zh = tm.per_example_scores("北京 大学", "北京大学")
    assert zh["length"] == 4  # characters, spaces not counted
    assert zh["exact_match"] == 1.0


@pytest.mark.parametrize("ref", [EN_REFS[0], ZH_REFS[0]])
def test_an_empty_prediction_scores_zero_everywhere(ref):
    scores = tm.per_example_scores("", ref)
    assert scores == {"bleu": 0.0, "chrf": 0.0, "rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0,
                      "exact_match": 0.0, "token_f1": 0.0, "length": 0}


def test_empty_prediction_matches_an_empty_reference_exactly():
    scores = tm.per_example_scores("", "")
    assert scores["exact_match"] == 1.0
    assert scores["token_f1"] == 0.0  # SQuAD v1.1: no shared token
    assert scores["bleu"] == 0.0


def test_stats_of_an_empty_prediction_count_only_the_reference():
    stats = tm.bleu_stats(["", EN_PREDS[0]], [EN_REFS[0], EN_REFS[0]])
    assert stats[0].tolist() == [0, len(EN_REFS[0].replace(".", " .").split())] + [0] * 8
    assert stats[1, 2:6].tolist() == [8, 5, 2, 0]  # matched 1- to 4-grams of the second example


def test_import_is_cheap_and_jieba_is_silent():
    code = ("import sys; import tunesmith.eval.text_metrics as tm; "
            "print(sorted(m for m in ('torch', 'sacrebleu', 'jieba', 'rouge_score', 'rouge_chinese', 'nltk') "
            "if m in sys.modules)); print(round(tm.rouge_scores('我爱北京', '我爱北京')['rouge1'], 3))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[:2] == ["[]", "1.0"]
    assert "prefix dict" not in done.stderr.lower()

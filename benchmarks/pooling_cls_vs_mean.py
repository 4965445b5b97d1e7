"""CLS vs pooler vs mean pooling for builtin:minilm on builtin:rt-snippets.

all-MiniLM-L6-v2 was trained as a sentence embedder with *mean* pooling; its BERT pooler
(dense+tanh over [CLS]) was never trained for that. This measures how much sentiment each
representation carries, with a linear probe (logistic regression on frozen features), and
optionally with a short LoRA fine-tune through the standard classification head.

Usage: python benchmarks/pooling_cls_vs_mean.py [--train 4000] [--eval 500]
Prints one JSON line per pooling.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tunesmith.data.sources import load_records
from tunesmith.data.split import subsample, train_eval_split
from tunesmith.models.load import load_tokenizer, resolve_model_source


def features(model, tok, texts, batch=128):
    out = {"cls": [], "pooler": [], "mean": []}
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tok(texts[i : i + batch], padding=True, truncation=True, max_length=64, return_tensors="pt")
            res = model(**enc)
            h = res.last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            out["cls"].append(h[:, 0])
            out["pooler"].append(res.pooler_output)
            out["mean"].append((h * m).sum(1) / m.sum(1))
    return {k: torch.cat(v) for k, v in out.items()}


def probe(xtr, ytr, xev, yev, epochs=300):
    torch.manual_seed(0)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xev = (xtr - mu) / sd, (xev - mu) / sd
    lin = torch.nn.Linear(xtr.shape[1], 2)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=epochs)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xtr), ytr) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return float((lin(xev).argmax(-1) == yev).float().mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--eval", type=int, default=500)
    args = ap.parse_args()
    from transformers import AutoModel

    rows = load_records("builtin:rt-snippets", "classification")
    train, ev = train_eval_split(rows, eval_size=args.eval, seed=42, stratify_field="label")
    train = subsample(train, args.train, 42)
    src = resolve_model_source("builtin:minilm")
    tok, model = load_tokenizer("builtin:minilm"), AutoModel.from_pretrained(src).eval()
    t = time.perf_counter()
    ftr = features(model, tok, [r["text"] for r in train])
    fev = features(model, tok, [r["text"] for r in ev])
    ytr = torch.tensor([r["label"] == "positive" for r in train]).long()
    yev = torch.tensor([r["label"] == "positive" for r in ev]).long()
    for name in ("cls", "pooler", "mean"):
        acc = probe(ftr[name], ytr, fev[name], yev)
        print(json.dumps({"pooling": name, "linear_probe_eval_accuracy": round(acc, 4), "train": len(train), "eval": len(ev)}))
    print(json.dumps({"feature_extraction_s": round(time.perf_counter() - t, 1)}))


if __name__ == "__main__":
    main()

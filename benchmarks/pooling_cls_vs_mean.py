"""CLS vs pooler vs mean pooling for builtin:minilm on builtin:rt-snippets.

all-MiniLM-L6-v2 was trained as a sentence embedder with *mean* pooling; its BERT pooler
(dense+tanh over [CLS]) was never trained for that. This measures how much sentiment each
representation carries, with a linear probe (logistic regression on frozen features), and
optionally with a short LoRA fine-tune through the standard classification head.

Usage: python benchmarks/pooling_cls_vs_mean.py [--train 4000] [--eval 500] [--finetune]
Prints one JSON line per pooling. --finetune adds LoRA fine-tunes with the same budget
through (a) the standard BertForSequenceClassification head and (b) mean pooling + linear.
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


class MeanPoolClassifier(torch.nn.Module):
    """Encoder + masked mean pooling + linear head, called like a transformers classifier."""

    def __init__(self, encoder, num_labels):
        super().__init__()
        self.encoder, self.config = encoder, encoder.config
        self.classifier = torch.nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids, attention_mask, **_):
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        from types import SimpleNamespace

        return SimpleNamespace(logits=self.classifier((h * m).sum(1) / m.sum(1)))


def finetune(pooling, train, ev, tmp):
    """LoRA (r=8 on query/key/value) with Tunesmith's loop; returns eval accuracy."""
    from accelerate import Accelerator
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel

    from tunesmith.config.methods import LoraMethod
    from tunesmith.config.schema import TrainConfig
    from tunesmith.methods import apply_method
    from tunesmith.models.load import load_model
    from tunesmith.objectives.classification import ClassificationObjective
    from tunesmith.eval.evaluate import evaluate
    from tunesmith.train.backend import Backend
    from tunesmith.train.loop import train as train_loop

    torch.manual_seed(0)
    if pooling == "standard-head":
        model, tok = load_model("builtin:minilm", "classification", id2label={0: "negative", 1: "positive"})
        model = apply_method(model, LoraMethod(r=8, alpha=16, dropout=0.1), "classification")
    else:
        tok = load_tokenizer("builtin:minilm")
        model = MeanPoolClassifier(AutoModel.from_pretrained(resolve_model_source("builtin:minilm")), 2)
        config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "key", "value"],
                            modules_to_save=["classifier"])
        model = get_peft_model(model, config)
    objective = ClassificationObjective(tok, ["negative", "positive"], 64)
    cfg = TrainConfig(epochs=1, batch_size=32, lr=1e-3, log_every=50)
    t = time.perf_counter()
    train_loop(model, objective, objective.encode(train), cfg, lr=cfg.lr, seed=42, run_dir=tmp,
               backend=Backend(Accelerator(cpu=True)), show_progress=False)
    metrics = evaluate(objective, model, objective.encode(ev), 64, "cpu", ("accuracy",))
    return metrics["accuracy"], time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=4000)
    ap.add_argument("--eval", type=int, default=500)
    ap.add_argument("--finetune", action="store_true")
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
    if args.finetune:
        import tempfile
        from pathlib import Path

        for pooling in ("standard-head", "mean"):
            with tempfile.TemporaryDirectory() as tmp:
                acc, wall = finetune(pooling, train, ev, Path(tmp))
            print(json.dumps({"pooling": pooling, "lora_1_epoch_eval_accuracy": round(acc, 4), "wall_s": round(wall, 1)}))


if __name__ == "__main__":
    main()

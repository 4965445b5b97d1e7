"""Knowledge distillation (``task: distill``): a student learns a trained teacher's outputs.

The student's batches, metrics and predictions are those of the teacher's kind of task
(a classifier or a chat model: ``student`` is that task's objective, and everything not
defined here is delegated to it); only the loss differs:

    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard loss [+ hidden_weight * MSE]

with both distributions softened by the temperature T (Hinton et al. 2015: the T^2 keeps
the gradient's size as T changes). For chat models the KL covers the answer tokens only,
the same tokens the SFT loss trains. With ``cache_top_k`` the teacher runs once over the
training rows before training and its top-k logits per target are kept with the features
(the KL is then over those k tokens, the teacher renormalised over them); otherwise it runs
on every batch and the KL covers the whole vocabulary.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from tunesmith.errors import ConfigError

IGNORE_INDEX = -100
CACHE_BATCH = 32
TEACHER = "_teacher"  # feature key of the cached teacher outputs
_OWN = ("student", "cfg", "teacher", "teacher_meta", "layer_map")


def kd_loss_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
                teacher_ids: torch.Tensor | None = None) -> torch.Tensor:
    """T^2 * sum over rows of KL(softmax(teacher / T) || softmax(student / T)).

    ``student_logits`` is (rows, classes). ``teacher_logits`` is (rows, classes), or (rows, k)
    with ``teacher_ids`` (rows, k) naming the classes of a top-k cache: the teacher is then
    renormalised over its k classes and the student's log-probabilities (over all classes)
    are read at them.
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    if teacher_ids is not None:
        log_student = log_student.gather(-1, teacher_ids)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum()
    return temperature ** 2 * kl


class DistillObjective:
    """The teacher's kind of objective with the distillation loss; ``attach_teacher`` first."""

    def __init__(self, student, cfg):
        self.student = student
        self.cfg = cfg
        self.teacher = None
        self.teacher_meta: dict = {}
        self.layer_map: list[int] | None = None  # student block i <- teacher block layer_map[i]

    def __getattr__(self, name):  # batches, metrics, predictions: the student task's own
        student = self.__dict__.get("student")
        if student is None:  # copy/pickle look for hooks before __init__ ran
            raise AttributeError(name)
        return getattr(student, name)

    def __setattr__(self, name, value):  # settings the data stage changes (overlength) go to the student
        if name in _OWN:
            object.__setattr__(self, name, value)
        else:
            setattr(self.student, name, value)

    @property
    def classifier(self) -> bool:
        return self.student.task == "classification"

    @property
    def needs_teacher(self) -> bool:
        """Whether the loss reads the teacher (alpha 0 without hidden matching: the hard loss only)."""
        return self.cfg.alpha > 0 or self.cfg.hidden_weight > 0

    # ------------------------------------------------------------------ the teacher

    def attach_teacher(self, train_features: list[dict], device, log=print) -> dict:
        """Load the teacher (merged when its method allows), check it fits the student's
        tokenizer and labels, and cache its outputs over ``train_features`` when
        ``cache_top_k`` asks for it; returns what the run summary records.

        Raises:
            ConfigError: another tokenizer, other labels, or a teacher that is not a model.
        """
        from tunesmith.config.methods import method_info
        from tunesmith.methods.saved import load_trained, merge_trained
        from tunesmith.rundir import resolve_final_dir

        final_dir, _ = resolve_final_dir(self.cfg.teacher)
        teacher, tokenizer, meta = load_trained(final_dir, full_precision=True)
        if method_info(meta["method"]).mergeable:
            teacher = merge_trained(teacher, meta["method"])  # one plain model: faster to run every batch
        self._check_fit(tokenizer, meta)
        self.teacher = teacher.float().to(device).eval().requires_grad_(False)
        self.teacher_meta = meta
        info = {"teacher": str(final_dir), "teacher_method": meta["method"], "kind": meta["task"],
                "temperature": self.cfg.temperature, "alpha": self.cfg.alpha,
                "hidden_weight": self.cfg.hidden_weight, "cache_top_k": self.cfg.cache_top_k}
        if self.cfg.cache_top_k and self.needs_teacher:
            started = time.perf_counter()
            self.cache_teacher(train_features, device)
            info["cache_s"] = round(time.perf_counter() - started, 3)
            log(f"distill: teacher outputs cached for {len(train_features)} rows in {info['cache_s']} s")
        return info

    def _check_fit(self, tokenizer, meta: dict) -> None:
        if tokenizer.get_vocab() != self.student.tokenizer.get_vocab():
            raise ConfigError(
                f"The teacher {self.cfg.teacher} has another tokenizer than the student: the student learns the "
                "teacher's distribution position by position (over the same vocabulary), so both must tokenize alike.",
                "Pick a student base from the teacher's family (same tokenizer), or distill.keep_every to build one.")
        labels = getattr(self.student, "labels", None)
        if self.classifier and list(meta.get("labels") or []) != list(labels):
            raise ConfigError(f"The teacher's labels {meta.get('labels')} are not the data's labels {labels}.",
                              "Distill on data with the teacher's labels.")

    def prepare(self, train_features: list[dict], device, log=print) -> tuple[dict, object]:
        """``attach_teacher``, then the student built from the teacher when ``keep_every``
        asks for one (else None: the run loads ``model.name``); returns ``(summary info, student)``."""
        info = self.attach_teacher(train_features, device, log)
        if not self.cfg.keep_every:
            return info, None
        student = self.layer_dropped_student()
        log(f"student: teacher blocks {self.layer_map} kept")
        return dict(info, student_blocks=self.layer_map), student

    def layer_dropped_student(self):
        """The student built from the teacher: every ``keep_every``-th block, their weights copied."""
        from tunesmith.models.prune import drop_layers

        student, kept = drop_layers(self.teacher, self.cfg.keep_every)
        self.layer_map = kept
        return student

    @torch.inference_mode()
    def cache_teacher(self, features: list[dict], device) -> None:
        """Store the teacher's outputs in each feature: a classifier's logits, or a chat
        model's top-k logits and token ids at each answer target."""
        # Rows of similar length batched together: little padding (training groups by length too).
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        for start in range(0, len(order), CACHE_BATCH):
            chunk = [features[i] for i in order[start:start + CACHE_BATCH]]
            batch = {k: v.to(device) for k, v in self.student.collate(chunk).items()}
            logits = self.teacher(**self._inputs(batch)).logits.float()
            if self.classifier:
                for feature, row in zip(chunk, logits.cpu()):
                    feature[TEACHER] = row.tolist()
                continue
            targets = batch["labels"][:, 1:] != IGNORE_INDEX
            values, ids = logits[:, :-1].topk(self.cfg.cache_top_k, dim=-1)
            for feature, v, i, m in zip(chunk, values.cpu(), ids.cpu(), targets.cpu()):
                feature[TEACHER] = {"logits": v[m].tolist(), "ids": i[m].tolist()}

    # ------------------------------------------------------------------ batches and loss

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.student.collate(features)
        cached = [f.get(TEACHER) for f in features]
        if all(c is not None for c in cached) and cached:
            if self.classifier:
                batch["teacher_logits"] = torch.tensor(cached)
            else:
                batch["teacher_logits"] = torch.tensor([v for c in cached for v in c["logits"]])
                batch["teacher_ids"] = torch.tensor([i for c in cached for i in c["ids"]], dtype=torch.long)
        return batch

    def _inputs(self, batch: dict) -> dict:
        if self.classifier:
            return self.student.model_inputs(batch)
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def loss_sum(self, model, batch) -> torch.Tensor:
        """Summed over the targets the student task counts (examples, or answer tokens)."""
        cfg = self.cfg
        hidden = cfg.hidden_weight > 0
        out = model(**self._inputs(batch), output_hidden_states=hidden)
        teacher_out = None
        if self.needs_teacher and ("teacher_logits" not in batch or hidden):
            with torch.no_grad():
                teacher_out = self.teacher(**self._inputs(batch), output_hidden_states=hidden)
        if self.classifier:
            logits, hard_targets = out.logits.float(), batch["labels"]
        else:
            targets = batch["labels"][:, 1:]
            mask = targets != IGNORE_INDEX
            logits, hard_targets = out.logits[:, :-1][mask].float(), targets[mask]
        loss = (1 - cfg.alpha) * F.cross_entropy(logits, hard_targets, reduction="sum")
        if cfg.alpha > 0:
            if teacher_out is None and self.classifier:
                kd = kd_loss_sum(logits, batch["teacher_logits"], cfg.temperature)
            elif teacher_out is None:
                kd = kd_loss_sum(logits, batch["teacher_logits"], cfg.temperature, batch["teacher_ids"])
            else:
                teacher = teacher_out.logits if self.classifier else teacher_out.logits[:, :-1][mask]
                kd = kd_loss_sum(logits, teacher, cfg.temperature)
            loss = loss + cfg.alpha * kd
        if hidden:
            loss = loss + cfg.hidden_weight * self._hidden_loss_sum(out.hidden_states, teacher_out.hidden_states,
                                                                    batch["attention_mask"])
        return loss

    def _hidden_loss_sum(self, student: tuple, teacher: tuple, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per example: mean over matched layers and real tokens of the mean squared difference."""
        if student[0].shape[-1] != teacher[0].shape[-1]:
            raise ConfigError(f"distill.hidden_weight matches hidden states, but the student is {student[0].shape[-1]} "
                              f"wide and the teacher {teacher[0].shape[-1]}.", "Set distill.hidden_weight: 0.")
        layers_s, layers_t = len(student) - 1, len(teacher) - 1
        pairs = [(0, 0)] + [(i + 1, (self.layer_map[i] + 1) if self.layer_map else round((i + 1) * layers_t / layers_s))
                            for i in range(layers_s)]
        mask = attention_mask.float()
        total = 0
        for s, t in pairs:
            per_token = (student[s].float() - teacher[t].float()).pow(2).mean(-1)
            total = total + (per_token * mask).sum(1) / mask.sum(1)
        return (total / len(pairs)).sum()

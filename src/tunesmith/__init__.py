"""Tunesmith: fine-tune pretrained language models end to end from one YAML recipe."""

__version__ = "0.1.0"

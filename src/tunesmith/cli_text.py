"""The examples and notes of ``tunesmith --help`` and each command's ``--help``.

Every ``tunesmith ...`` line here is checked by tests/unit/test_documented_commands.py
(parses, its recipe validates) and run by tests/integration/test_documented_commands_run.py.
"""

TRAIN_EXAMPLES = """examples:
  tunesmith train configs/sft-identity-lora.yaml
  tunesmith train configs/demo.yaml --set train.lr=1e-3 --set method.r=16
  tunesmith train runs/demo/config.yaml --output-dir runs/demo-again   # repeat a run
  tunesmith train configs/demo.yaml --resume                            # continue after a crash or Ctrl-C
"""


ENVIRONMENT = """environment variables:
  TUNESMITH_CACHE        converted models and unpacked datasets (default ~/.cache/tunesmith)
  TUNESMITH_DATA_CACHE   tokenized data cache (default $TUNESMITH_CACHE/data)
  TUNESMITH_NO_PROGRESS  any value: no progress bars, plain progress lines instead
  TUNESMITH_DEBUG        1: show every library message and warning (as --debug does)
  TUNESMITH_API_KEY      default of serve --api-key
  TUNESMITH_SDIST_DIR    a folder holding the vaderSentiment 3.3.2 sdist (builtin:rt-snippets offline)
"""


RECIPE_EXAMPLES = """examples:
  tunesmith recipe fields                        # every field (docs/recipe-reference.md is this, as a table)
  tunesmith recipe fields train.guard            # one section
  tunesmith recipe fields method[adalora]        # one method's options
  tunesmith recipe new --task causal_lm --method lora --out my-sft.yaml
"""


DATA_EXAMPLES = """examples:
  tunesmith data inspect configs/demo.yaml                  # what the recipe's data stage sees
  tunesmith data inspect my_chats.jsonl                     # one file: rejects by line, duplicates, lengths
  tunesmith data prepare configs/sft-identity-lora.yaml --out prepared/
  tunesmith data audit configs/demo.yaml --fix drop         # cleanlab: probably mislabelled rows
writes data_report.json and lengths.png (prepare also train.jsonl, eval.jsonl, rejects.jsonl;
audit writes label_issues.jsonl, and with --fix cleaned copies and audit_log.jsonl)
"""


SERVE_EXAMPLES = """examples:
  tunesmith serve --adapter quill=runs/sft-identity-lora --base builtin:smollm2-135m
  tunesmith serve --adapter sentiment=runs/demo --api-key $KEY --allow-dir runs
  curl localhost:8000/v1/chat/completions -d '{"model": "quill", "messages": [{"role": "user", "content": "Who are you?"}]}'
  curl localhost:8000/v1/classify -d '{"model": "sentiment", "input": ["a joyless film"]}'
endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (stream: true for SSE), POST /v1/completions,
  POST /v1/classify, POST /v1/adapters {"name", "path"} and DELETE /v1/adapters/NAME (need --api-key)
"""


EXPORT_EXAMPLES = """examples:
  tunesmith export runs/demo --to merged    # safetensors; merged logits checked against base + adapter
  tunesmith export runs/demo --to onnx      # model.onnx; onnxruntime logits checked against PyTorch
  tunesmith export runs/demo --to int8      # int8 model.onnx; accuracy, size and latency before/after
  tunesmith export runs/chat --to gguf --quant q8_0   # model-q8_0.gguf + Ollama Modelfile; logits checked
  tunesmith export runs/demo --to pruned --sparsity 0.25   # FFN neurons removed; refused if accuracy drops > 2 points
every export writes export.json with what was checked and the numbers
"""


COMPARE_EXAMPLES = """examples:
  tunesmith compare configs/demo.yaml --steps 60 --set data.max_train_samples=2000
  tunesmith compare configs/demo.yaml --methods lora,dora,ia3 --variant lora-r4='{"type": "lora", "r": 4}'
  tunesmith compare configs/demo.yaml --methods lora --rank-study --steps 60
presets: {presets}
writes compare.md, compare.csv, compare.json, compare.png (and rank_study.png) to --out
"""

"""``tunesmith chat`` and ``tunesmith predict``: use a trained model from the terminal."""

from __future__ import annotations

import argparse
import json

USE_EXAMPLES = """examples:
  tunesmith chat runs/sft-identity-lora                 # streamed answers; /reset /system /params /exit
  tunesmith chat builtin:smollm2-135m
  tunesmith predict runs/sft-identity-lora --input questions.jsonl --output answers.jsonl
  tunesmith predict runs/demo --input reviews.csv --output labels.jsonl   # label + every label's probability
"""


def add_use_parsers(sub) -> None:
    """The ``chat`` and ``predict`` sub-commands."""
    chat = sub.add_parser("chat", help="talk to a run or a model in the terminal, answers streamed",
                          epilog=USE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    chat.add_argument("target", help="run directory, final/ folder, merged export or base model spec")
    chat.add_argument("--system", help="system prompt (default: the run's)")
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    chat.add_argument("--max-new-tokens", type=int, default=256, help="most tokens per answer (default 256)")
    predict = sub.add_parser("predict", help="answer (chat model) or label (classifier) every row of a file",
                             epilog=USE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("target", help="run directory, final/ folder, merged export or base model spec")
    predict.add_argument("--input", required=True, help="rows: chats (messages / conversations / instruction) for "
                         "a chat model, texts for a classifier; .jsonl, .json, .csv, .tsv, .parquet")
    predict.add_argument("--output", required=True, help="JSON lines written: each row with its prediction")
    predict.add_argument("--text-field", default="text", help="a classifier's text column (default text)")
    predict.add_argument("--max-new-tokens", type=int, default=256, help="most tokens per answer (default 256)")
    predict.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); above 0 samples")
    predict.add_argument("--seed", type=int, default=0, help="seeds sampling (default 0)")
    predict.add_argument("--batch-size", type=int, default=16, help="rows decoded together (default 16)")
    predict.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    for p in (chat, predict):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")


def run_use_command(args) -> None:
    """Run ``chat`` or ``predict`` from parsed arguments."""
    if args.command == "chat":
        from tunesmith.chat import ChatParams, ChatSession, run_chat
        from tunesmith.eval.targets import load_target

        session = ChatSession(load_target(args.target), params=ChatParams(args.temperature, 1.0, args.max_new_tokens))
        if args.system:
            session.system = args.system
        run_chat(session)
        return
    from tunesmith.eval.decode import DecodeSettings
    from tunesmith.predict import predict_file

    settings = DecodeSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed,
                              batch_size=args.batch_size)
    summary = predict_file(args.target, args.input, args.output, settings, text_field=args.text_field,
                           show_progress=not args.no_progress)
    print(json.dumps(summary))

"""Every `tunesmith ...` command in the README's code blocks and in every --help epilog is
checked: its arguments parse, and a recipe it names loads with its --set overrides (so a
documented quick try cannot stop on a validation error). tests/integration/
test_documented_commands_run.py (slow) runs the self-contained ones on a reduced budget."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from tunesmith.cli import build_parser
from tunesmith.cli_eval import is_review, review_parser
from tunesmith.config.load import load_recipe

REPO = Path(__file__).resolve().parents[2]


def _shell_lines(text: str) -> list[str]:
    """The lines of the markdown's shell code blocks (```bash, ```sh or a bare ```)."""
    lines, language = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            language = None if language is not None else (line[3:].strip() or "sh")
        elif language in ("bash", "sh"):
            lines.append(line)
    return lines


def _commands(lines: list[str]) -> list[list[str]]:
    commands, pending = [], ""
    for raw in lines:
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line.startswith("tunesmith "):
            argv = shlex.split(line, comments=True)[1:]
            commands.append([a.replace("$KEY", "key") for a in argv])
    return commands


def readme_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return _commands(_shell_lines(text))


def epilog_commands() -> list[list[str]]:
    parsers = [build_parser(), review_parser()]
    while parsers:
        current = parsers.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
        yield from _commands((current.epilog or "").splitlines())


DOCUMENTED = readme_commands() + list(epilog_commands())


def test_the_docs_document_commands():
    assert len(readme_commands()) >= 15 and len(list(epilog_commands())) >= 15
    assert {argv[0] for argv in DOCUMENTED} >= {"train", "demo", "compare", "data", "export", "serve", "recipe", "eval"}


@pytest.mark.parametrize("argv", DOCUMENTED, ids=[" ".join(a)[:80] for a in DOCUMENTED])
def test_documented_command_parses_and_its_recipe_validates(argv):
    parse = (lambda a: review_parser().parse_args(a[1:])) if is_review(argv) else build_parser().parse_args
    if "--help" in argv:
        with pytest.raises(SystemExit) as exit_info:
            parse(argv)
        assert exit_info.value.code == 0
        return
    args = parse(argv)
    if is_review(argv):
        return
    recipe = getattr(args, "recipe", None) or (getattr(args, "target", None) if args.command == "data" else None)
    if args.command == "demo":
        recipe = str(REPO / "configs" / "demo.yaml")
    if recipe and recipe.endswith(".yaml") and (REPO / recipe).is_file():
        overrides = list(getattr(args, "overrides", []))
        if getattr(args, "steps", None):
            overrides.append(f"train.max_steps={args.steps}")
        load_recipe(REPO / recipe if not Path(recipe).is_absolute() else recipe, overrides)

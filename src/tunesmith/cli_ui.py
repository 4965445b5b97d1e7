"""``tunesmith ui``: the web UI (recipe -> data -> train -> compare -> chat -> review -> export)."""

from __future__ import annotations

import argparse
import os

UI_EXAMPLES = """examples:
  tunesmith ui                                   # http://127.0.0.1:7860/, workspace ./tunesmith-ui
  tunesmith ui --workspace ~/experiments --jobs 2
  tunesmith ui --host 0.0.0.0 --token "$KEY"     # reachable from the network: a token is required
Runs started in the UI are ordinary run directories under WORKSPACE/runs/; the CLI reads
them too, and a restarted UI shows them again (runs still going are picked up).
"""


def add_ui_parser(sub) -> None:
    """The ``ui`` sub-command."""
    ui = sub.add_parser("ui", help="the whole workflow in a browser: new run, data, runs, compare, playground, "
                        "review, export", epilog=UI_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ui.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only; "
                    "any other address needs --token)")
    ui.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    ui.add_argument("--workspace", default="tunesmith-ui", help="folder holding runs/, recipes/, data/ and reviews/ "
                    "(default ./tunesmith-ui)")
    ui.add_argument("--token", default=os.environ.get("TUNESMITH_UI_TOKEN"),
                    help="token every state-changing request must carry (default: $TUNESMITH_UI_TOKEN, or a random "
                    "one written into the page on 127.0.0.1)")
    ui.add_argument("--jobs", type=int, default=1, help="runs and exports allowed at once (default 1)")
    ui.add_argument("--max-upload-mb", type=int, default=200, help="largest data upload accepted (default 200 MB)")
    ui.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")


def run_ui_command(args) -> None:
    """Start the UI from parsed arguments."""
    from tunesmith.errors import ConfigError
    from tunesmith.ui.app import run_ui

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, not {args.jobs}.")
    try:
        run_ui(args.workspace, args.host, args.port, args.token, args.jobs, args.max_upload_mb)
    except ValueError as exc:
        raise ConfigError(str(exc), "Example: tunesmith ui --host 0.0.0.0 --token \"$KEY\"") from None

"""`python -m tunesmith` runs the command line."""

from tunesmith.cli import main

raise SystemExit(main())

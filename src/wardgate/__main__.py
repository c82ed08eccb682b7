"""`python -m wardgate` runs the command-line interface."""

from wardgate.cli import main

raise SystemExit(main())

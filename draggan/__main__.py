"""`python -m draggan ...` entry point (see `draggan.cli`)."""

from .cli import main

raise SystemExit(main())

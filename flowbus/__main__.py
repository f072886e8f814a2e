"""python -m flowbus → the command line."""

from flowbus.cli import main

raise SystemExit(main())

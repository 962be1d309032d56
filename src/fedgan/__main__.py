"""`python -m fedgan` is the same as the `fedgan` command."""

from fedgan.cli import main

raise SystemExit(main())

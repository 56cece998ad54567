"""`python -m taskserver` is the `taskserver` command."""
import sys

from .cli import main

sys.exit(main())

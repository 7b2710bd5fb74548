"""`python -m smtp_stack ...` is the `smtp-stack` command."""
import sys

from .cli import main

sys.exit(main())

"""``python -m gdbstub`` is the ``wasm-gdbstub`` command."""
import sys

from .cli import main

sys.exit(main())

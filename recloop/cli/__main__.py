"""``python -m recloop.cli``: the same front door as the ``recloop`` script (the server's workers use it)."""

from recloop.cli.app import app

app()

"""The front door: the ``recloop`` command line (``app``), one module per command group, the run report and
the demo. It parses, prints and calls the library; nothing in the package imports it."""

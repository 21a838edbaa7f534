"""The top layer: the ``tabula`` command line (``cli.main:app``), one module per command group.

The only package that imports every other one, and the one place errors become exit codes
(:mod:`cli.exits`).
"""

"""Worked examples: one folder per model (``example.yaml``, ``params.yaml``, optional ``prepare.py``).

Select one with ``TABULA_EXAMPLE`` / ``--example`` (a folder name here, or the path of your own).
"""

"""Benchmarks that start the servers they measure: side by side (:mod:`bench.compare`) and overload
(:mod:`bench.overload`).

They package and serve models (``service``) and replay ``load``'s request rows, so they sit above both,
beside ``release``. ``load`` itself only sends requests to a URL it is given.
"""

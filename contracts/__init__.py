"""The bottom layer: what a trained model promises and what every component shares.

The model contract and artifact schemas, the request/response models built from them, the one error
hierarchy (:mod:`contracts.errors`), settings with validated overrides, model file I/O, and the example
folders with their data and params. Nothing here imports training, service, load, release or cli.
The service image ships this package: modules the service imports keep their imports light.
"""

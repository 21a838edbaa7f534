"""The bottom layer: what a trained model promises, shared by training and the service.

Nothing here imports training, service, load or release; only pydantic, so the service image can ship it.
"""

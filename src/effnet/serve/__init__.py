"""``effnet serve``: an HTTP inference server (KServe v2 REST, ``/v1/classify``, a web page, metrics).

>>> from effnet.predict import Classifier
>>> from effnet.serve import ServedModel, ServeConfig, create_app
>>> app = create_app(ServedModel(Classifier("efficientnet-lite0")), ServeConfig(max_batch=8))
>>> # uvicorn.run(app, host="127.0.0.1", port=8000)

Needs the ``serve`` extra (Starlette, uvicorn, python-multipart, prometheus-client).
"""

from .app import ServeConfig, create_app
from .batcher import DynamicBatcher, QueueFullError
from .model import ModelInfo, ServedModel

__all__ = ["DynamicBatcher", "ModelInfo", "QueueFullError", "ServeConfig", "ServedModel", "create_app"]

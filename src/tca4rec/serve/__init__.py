"""``tca4rec serve``: the LLM recommender as an HTTP service (FastAPI + uvicorn), with micro-batching.

One process holds one copy of the model and decodes on one worker thread; concurrent
requests are gathered into one beam search call (``batcher``). Scale out by running
replicas of this process behind any load balancer (docs/serve.md): there is no cluster
layer here. Layers: ``batcher`` (no HTTP), ``app`` (routes, validation, errors), ``server``
(start-up, uvicorn, shutdown). Only ``tca4rec.cli`` imports this package.
"""

from tca4rec.serve.server import ServeConfig, serve

__all__ = ["ServeConfig", "serve"]

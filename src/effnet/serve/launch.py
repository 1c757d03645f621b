"""Load the model and run uvicorn: what ``effnet serve`` does after parsing its arguments.

With ``workers > 1`` uvicorn starts worker processes that each import
:func:`app_from_env` and load their own copy of the model; the options travel in
the ``EFFNET_SERVE_OPTIONS`` environment variable, and the metrics of all workers
meet in a ``PROMETHEUS_MULTIPROC_DIR`` made for this run and removed when it ends.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import EffnetError
from .app import ServeConfig, create_app
from .auth import exposure_warning, is_loopback
from .guard import LOOPBACK_HOSTS
from .metrics import MULTIPROC_ENV
from .model import ServedModel

ENV_OPTIONS = "EFFNET_SERVE_OPTIONS"


@dataclass(frozen=True)
class ServerOptions:
    model: str = "efficientnet-b5"
    weights: str | None = None
    backend: str = "auto"  # as the CLI: the fastest installed backend (effnet.backends.AUTO_RANKING)
    precision: str | None = None  # None: the backend's default, which it reports in /v2/models/{name}
    model_path: str | None = None  # an exported/quantized file to run instead of the cached export
    output_kind: str | None = None  # what a model_path file without effnet metadata outputs (prob, logits)
    device: str = "cpu"  # cpu, cuda, cuda:N, auto (effnet.device)
    name: str | None = None  # model name in the v2 API; default: the model name
    threads: int | None = None  # intra-op threads per worker; default: the cores divided among workers
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: str = "info"
    access_log: bool = True
    config: ServeConfig = field(default_factory=ServeConfig)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerOptions:
        raw = json.loads(text)
        return cls(**{**raw, "config": ServeConfig(**raw["config"])})

    @property
    def worker_threads(self) -> int:
        return self.threads or max(1, (os.cpu_count() or 1) // self.workers)


def load_model(options: ServerOptions) -> ServedModel:
    from ..predict import Classifier

    # Every backend takes `threads`: each worker process gets its share of the cores.
    backend_options: dict = {"threads": options.worker_threads}
    if options.precision is not None:
        backend_options["precision"] = options.precision
    if options.model_path is not None:
        backend_options["model_path"] = options.model_path
    if options.output_kind is not None:
        backend_options["output_kind"] = options.output_kind
    classifier = Classifier(
        options.model,
        options.weights,
        backend=options.backend,
        device=options.device,
        progress=False,
        decode="reduced",  # camera-size JPEG uploads decoded by DCT scaling; ImageNet-size ones exactly
        batch_hint=options.config.max_batch,  # a CUDA fast path prepares the batcher's largest batch
        # A server that batches (--max-batch > 1) runs the throughput configuration (OpenVINO: its streams
        # share each batch); --max-batch 1 answers one request at a time on the latency configuration.
        workload="throughput" if options.config.max_batch > 1 else "latency",
        **backend_options,
    )
    return ServedModel(classifier, name=options.name)


def app_from_env():
    """uvicorn factory for worker processes (``--workers N``)."""
    try:
        options = ServerOptions.from_json(os.environ[ENV_OPTIONS])
    except KeyError:
        raise EffnetError(f"{ENV_OPTIONS} is not set: start workers with `effnet serve --workers N`") from None
    model = load_model(options)
    app = create_app(model, options.config)
    app.state.metrics.set_worker_threads(_backend_threads(model, options))
    return app


def _backend_threads(model: ServedModel, options: ServerOptions) -> int:
    """The inference threads this worker's backend runs with, as the backend reports them."""
    backend = model.classifier.backend
    threads = getattr(backend, "threads", None)
    if isinstance(threads, int):
        return threads
    if getattr(backend, "name", None) == "torch":
        import torch

        return torch.get_num_threads()
    return options.worker_threads


def guarded(options: ServerOptions) -> ServerOptions:
    """A loopback bind answers only loopback Host names, plus ``--allowed-hosts`` (effnet.serve.guard)."""
    hosts = options.config.allowed_hosts
    if not is_loopback(options.host):
        return options
    config = replace(options.config, allowed_hosts=(*LOOPBACK_HOSTS, *(hosts or ())))
    return replace(options, config=config)


def serve(options: ServerOptions) -> None:
    """Run until SIGINT/SIGTERM; in-flight requests finish first (uvicorn's graceful shutdown)."""
    import uvicorn

    options = guarded(options)

    common: dict[str, Any] = dict(
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        access_log=options.access_log,
        # Requests cannot outlive their timeout, so shutdown never waits much longer than that.
        timeout_graceful_shutdown=int(
            max(options.config.timeout_s, options.config.explain_timeout_s, options.config.video_timeout_s)
        )
        + 5,
    )
    where = f"http://{options.host}:{options.port}"
    warning = exposure_warning(options.host, options.config.api_key, options.config.allowed_hosts)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    if options.workers == 1:
        model = load_model(options)  # before binding: a bad --model/--weights fails here, with one line
        info = model.info
        print(
            f"effnet serve: {info.name} (weights {info.weights}, {info.backend} {info.precision}) on {where}  "
            "[page /, KServe v2 /v2, /v1/classify, /metrics]",
            file=sys.stderr,
            flush=True,
        )
        uvicorn.run(create_app(model, options.config), **common)
        return
    from ..source import resolve_source

    # fail early, before forking workers
    resolve_source(
        options.model, options.weights, model_path=options.model_path, output_kind=options.output_kind, progress=False
    )
    os.environ[ENV_OPTIONS] = options.to_json()
    print(
        f"effnet serve: {options.model} in {options.workers} worker processes on {where}", file=sys.stderr, flush=True
    )
    # Set before the workers start (they read it when they first import prometheus_client); a fresh
    # directory per run, so counts of an earlier run or of a killed worker's predecessor never add in.
    metrics_dir = tempfile.mkdtemp(prefix="effnet-serve-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run("effnet.serve.launch:app_from_env", factory=True, workers=options.workers, **common)
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(metrics_dir, ignore_errors=True)

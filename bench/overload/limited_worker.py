"""Variant (b) of the overload bench: the app's worker class with uvicorn's static
`limit_concurrency` (benchmark only, never deployed).

uvicorn-worker builds uvicorn's Config from the class attribute CONFIG_KWARGS (read in
.venv/.../uvicorn_worker/_workers.py), so a subclass that adds `limit_concurrency` is all it
takes. uvicorn then answers 503 (plain text "Service Unavailable") to a request arriving while
the process holds that many connections *or* that many running requests. Run with
    PYTHONPATH=bench/overload BENCH_LIMIT_CONCURRENCY=N gunicorn --config gunicorn.conf.py \
        --worker-class limited_worker.LimitedUvicornWorker app.main:app
"""

import os
from typing import Any, ClassVar

from app.gunicorn_worker import UvicornWorker


class LimitedUvicornWorker(UvicornWorker):
    """The production worker with limit_concurrency from BENCH_LIMIT_CONCURRENCY."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "limit_concurrency": int(os.environ["BENCH_LIMIT_CONCURRENCY"]),
    }

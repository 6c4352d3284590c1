"""SoniqueBay Fleet: a Celery pipeline that turns a music library into a PostgreSQL catalogue.

`celery -A worker_app worker -Q extract` finds the application as ``worker_app.app``. The application is built
lazily so that importing ``worker_app.metadata`` (the extractor) costs no broker configuration.
"""
from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker_app.celery_app import app

        return app
    raise AttributeError(name)

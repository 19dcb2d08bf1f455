"""Links into the MLflow UI that open on advlab's runs.

MLflow 3 opens an experiment in its GenAI view (traces, tokens); ``?workflowType=machine_learning``
in a link opens the "Model training" view with the runs table instead, and the UI remembers the
choice for later visits. A database store is served by ``make ui`` (``mlflow ui``) on
``http://127.0.0.1:5000``; a tracking server serves its own UI at its URI.
"""

from __future__ import annotations

import shlex
from urllib.parse import urlsplit

from advlab.config import PROJECT_ROOT

LOCAL_UI = "http://127.0.0.1:5000"  # where `make ui` serves the project's store by default
_PROJECT_STORE = f"sqlite:///{(PROJECT_ROOT / 'runs' / 'mlflow.db').resolve()}"  # what it serves
_ML_VIEW = "?workflowType=machine_learning"


def ui_link(tracking_uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """The UI page of a run (``experiment_id`` and ``run_id``), of an experiment's runs
    (``experiment_id``) or of the experiments list (neither), in the model-training view.

    The host is ``tracking_uri`` itself for an ``http(s)://`` tracking server (less any
    user:password, which must not reach a log), else :data:`LOCAL_UI`."""
    base = LOCAL_UI
    if tracking_uri.startswith(("http://", "https://")):
        url = urlsplit(tracking_uri)
        base = f"{url.scheme}://{url.netloc.rpartition('@')[2]}{url.path}"
    page = "experiments"
    if experiment_id is not None:
        page += f"/{experiment_id}/runs"
        if run_id is not None:
            page += f"/{run_id}"
    return f"{base.rstrip('/')}/#/{page}{_ML_VIEW}"


def serve_command(tracking_uri: str) -> str | None:
    """The command that serves :func:`ui_link`'s pages for a database store: ``make ui`` for the
    project's own store, else ``mlflow ui --backend-store-uri <uri>``; None for a tracking
    server, which serves its UI itself."""
    if tracking_uri.startswith(("http://", "https://")):
        return None
    if tracking_uri == _PROJECT_STORE:
        return "make ui"
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"

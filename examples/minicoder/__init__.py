"""minicoder: a miniature Coder-like control plane with the AI bridge mounted.

The example host of ``aibridge_asgi``, and the code to copy when embedding
the bridge in a server of your own (docs/embedding.md walks through it):

* :mod:`.db`: users, hashed API tokens, browser sessions, record tables (SQLite).
* :mod:`.auth`: the bridge's token resolver; the same check for the host's routes.
* :mod:`.recorder`: the bridge's recorder, writing batches from a worker thread.
* :mod:`.queries`: reading records back (filters, cursor pages, usage totals).
* :mod:`.api`: ``GET /api/v2/aibridge/interceptions``, Coder's management API,
  and revoking a token.
* :mod:`.pages`, :mod:`.charts`, ``templates/``: the usage page and sign-in.
* :mod:`.web`: the checks every form post goes through (origin, capped body).
* :mod:`.app`: :func:`build_app`, where the bridge is created and mounted.
* :mod:`.cli`: ``serve``, ``create-user`` and ``revoke-token``.
"""

from .app import Host, Settings, build_app

__all__ = ["Host", "Settings", "build_app"]

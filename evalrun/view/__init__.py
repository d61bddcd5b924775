"""`evalrun view`: a local web app over a folder of run folders (Starlette and Uvicorn).

Importing this package loads neither: `evalrun.view.app.create_app` builds the app and
`evalrun.view.server.serve` runs it. The stores are read read-only (`Store.open_readonly`: no
lock, no migration, nothing written); only a review is written, one INSERT into the run's store.
"""

from __future__ import annotations

__all__: list[str] = []

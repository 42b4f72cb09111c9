"""The example host: a miniature Coder-like control plane with the bridge mounted.

    python examples/host.py serve [--host 127.0.0.1] [--port 8080] [--db aibridge-host.db]
    python examples/host.py create-user NAME [--admin] [--db ...]   # prints a new token

The code lives in the ``minicoder`` package next to this file; start reading
at ``minicoder/app.py``. docs/embedding.md walks through it file by file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from minicoder.cli import main

if __name__ == "__main__":
    sys.exit(main())

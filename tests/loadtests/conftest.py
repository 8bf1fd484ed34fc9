"""``loadtests/`` is a directory of the repository, not part of the installed ``shardcorn``
package, so make it importable however pytest was started (``pytest`` or ``python -m``)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

"""The enh1 recipe's ``local/`` scripts run as ``python local/<name>.py``, with ``local/`` first on ``sys.path``
(``import mini_corpus``); their tests import them the same way."""

import sys
from pathlib import Path

LOCAL = Path(__file__).resolve().parents[4] / "egs2" / "clipsep" / "enh1" / "local"
if str(LOCAL) not in sys.path:
    sys.path.insert(0, str(LOCAL))

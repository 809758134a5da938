"""SCT's own test data (MIT, ``sct_testing_data``), kept beside the project as ``../shared/data/sct_testing_data``.

``ROOTLETS_SCT_TESTING_DATA`` names another copy; tests that need it skip (with the reason) where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]


def _find() -> Path:
    given = os.environ.get("ROOTLETS_SCT_TESTING_DATA")
    candidates = [Path(given)] if given else []
    candidates += [_REPO.parent / "shared" / "data" / "sct_testing_data", _REPO / "shared" / "data" / "sct_testing_data",
                   Path("/work/shared/data/sct_testing_data")]
    return next((c for c in candidates if (c / "t2" / "t2.nii.gz").is_file()), candidates[0])


SCT_TESTING_DATA = _find()
T2 = SCT_TESTING_DATA / "t2"
needs_t2 = pytest.mark.skipif(not (T2 / "t2.nii.gz").is_file(),
                              reason=f"SCT's test data not found ({T2}); set ROOTLETS_SCT_TESTING_DATA")

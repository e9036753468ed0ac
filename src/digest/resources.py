"""Where the files shipped beside the code live: templates/ and alembic/.

From a source checkout (editable install) they are at the top of the repository; a built
wheel carries them inside the package under _data/.
"""

from __future__ import annotations

from pathlib import Path


def resource_dir(name: str) -> Path:
    packaged = Path(__file__).parent / "_data" / name
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / name

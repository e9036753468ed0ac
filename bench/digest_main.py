"""Entry point for the digest system's process: `python bench/digest_main.py digest ...`.

Started by path, importing at the top what the installed `digest` console script imports and
nothing more, because a multiprocessing worker re-imports its parent's main script before it
runs a job: the parser workers then pay the same imports (and memory) as under `digest poll`.
The benchmark's own modules (aiohttp, feedparser) are imported only when run as the main.
"""

from importlib import import_module
from importlib.metadata import entry_points

# The module behind the `digest` console script (digest.cli when digest is not installed).
import_module(
    next((ep.module for ep in entry_points(group="console_scripts", name="digest")), "digest.cli")
)

if __name__ == "__main__":
    from bench.systems import main

    main()

"""digest: a feed aggregator that publishes daily link digests as HTML, gemtext and Atom.

The pipeline, one module a stage: config -> fetch -> parse -> store -> editions -> render,
wired together by poll (fetch+parse+store for many feeds), daemon (on clock's schedule) and cli.
"""

__version__ = "0.1.0"
PROJECT_URL = "https://example.org/digest"

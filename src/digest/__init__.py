"""digest: a feed aggregator that publishes daily link digests as HTML, gemtext and Atom.

The pipeline, one module a stage, data flowing one way:
config -> fetch (gemini) -> parse/ -> store/ -> editions -> render -> serve.

Around the stages: poll wires fetch, parse and store for many feeds (due decides when each is
polled next); publish closes editions and renders under the publish lock; clock holds the
schedules and closings that daemon acts on; status, logs and cli face the operator; locks,
leader and files keep concurrent runs and killed processes from doing harm.
"""

__version__ = "0.1.0"
PROJECT_URL = "https://example.org/digest"

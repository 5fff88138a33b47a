"""The ingest HTTP service of one program: `create_app` (gamify.ingest.app) and
`python -m gamify.ingest` (gamify.ingest.__main__)."""

"""The build side of ImageSearchTR, one module a step, in the order data flows:

inputs.py / download.py (images and captions) -> encode.py (parquet shards with embeddings) ->
index.py (FAISS indices + manifest) -> publish.py (a Hub dataset repo or a local folder).
cli.py is the command line: ``python -m pipeline --help``.
"""

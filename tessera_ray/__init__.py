"""tessera-ray: TESSERA embeddings as a Ray map-reduce over object storage."""

__version__ = "0.1.0"

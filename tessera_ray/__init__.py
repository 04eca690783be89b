"""tessera-ray: TESSERA embeddings as a Ray map-reduce over object storage."""

__version__ = "0.1.0"


def code_version() -> str:
    """The installed package's version (what runs, which an editable checkout may have moved past ``__version__``)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tessera-ray")
    except PackageNotFoundError:
        return __version__

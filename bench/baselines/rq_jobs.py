"""Jobs for the RQ baseline (importable by RQ workers)."""


def noop(*args) -> None:
    """A task that does nothing: dispatch cost only."""
    return None

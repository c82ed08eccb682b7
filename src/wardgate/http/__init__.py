"""The HTTP layer: the only package that imports Starlette or FastAPI."""

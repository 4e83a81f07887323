"""The store: session logs and media (the source of truth), the history index over them, exports."""

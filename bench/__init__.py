"""Benchmarks (not tests). Each script's docstring says what it measures and how to run it."""


def allocate_as_the_app() -> None:
    """glibc's allocator set as the app sets it at start-up (`server/memory.py`: `DRAGGAN_MALLOC_ARENAS`,
    `DRAGGAN_MALLOC_KEEP_MB`; set `DRAGGAN_MALLOC_KEEP_MB=0` to measure glibc's default), so CPU figures are
    the app's."""
    from draggan import settings
    from draggan.server.memory import tune_allocator

    config = settings.get()
    tune_allocator(config.malloc_arenas, config.malloc_keep_mb)

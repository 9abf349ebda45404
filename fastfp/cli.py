"""The ``fastfp`` command line (grows with the CLI issue). Imports of the engine stay inside commands
so that ``fastfp --version`` is fast."""

from __future__ import annotations

import click

from ._version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fastfp")
def main() -> None:
    """fastfp: fixed points and attractor geometry of recurrent networks."""


@main.command()
def info() -> None:
    """Versions, backends available and threads, as JSON on stdout."""
    import json
    import platform

    import numba
    import numpy
    import scipy

    try:
        import cupy  # noqa: F401

        gpu = "cupy installed"
    except ImportError:
        gpu = "not available (pip install 'fastfp-rnn[gpu]')"
    click.echo(
        json.dumps(
            {
                "fastfp": __version__,
                "python": platform.python_version(),
                "numpy": numpy.__version__,
                "scipy": scipy.__version__,
                "numba": numba.__version__,
                "numba_threads": numba.config.NUMBA_NUM_THREADS,
                "backends": {"cpu": "numba", "numpy": "reference", "gpu": gpu},
            },
            indent=2,
        )
    )


if __name__ == "__main__":  # pragma: no cover
    main()

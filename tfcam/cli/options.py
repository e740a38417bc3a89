"""Options shared by several commands (one definition each, so a name means the same everywhere)
and the small helpers commands share.

Each option function returns a click decorator; where commands word a help text differently, the
text is a parameter and the option stays one definition.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import click

from tfcam.errors import UserError


def _stack(*decorators: Callable) -> Callable:
    """One decorator applying several, in the order listed (as if written top to bottom)."""

    def apply(fn: Callable) -> Callable:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def json_option(help: str = "Print JSON only.") -> Callable:
    """``--json``: print only JSON on stdout (progress stays on the terminal)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def experiment_options(
    *,
    required: bool = True,
    weights: bool = True,
    experiment_help: str = "The experiment.",
    data_dir_help: str = "Overrides data.data_dir.",
    weights_help: str = "Overrides model.weights.",
    set_help: str = "Override a config field.",
) -> Callable:
    """``-e/--experiment``, ``--data-dir``, ``--weights`` and ``--set``: what loads an experiment
    (:func:`tfcam.config.load_experiment`)."""
    options = [
        click.option(
            "-e",
            "--experiment",
            required=required,
            metavar="NAME|PATH.yaml",
            help=experiment_help,
        ),
        click.option("--data-dir", metavar="DIR", help=data_dir_help),
    ]
    if weights:
        options.append(click.option("--weights", metavar="imagenet|none|PATH", help=weights_help))
    options.append(
        click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=set_help)
    )
    return _stack(*options)


def count_option(*decls: str, default: int | None = None, minimum: int = 1, help=None) -> Callable:
    """A whole number of at least ``minimum`` (images, samples, steps, channels…); the default
    shown in the help when there is one."""
    return click.option(
        *decls,
        type=click.IntRange(min=minimum),
        default=default,
        show_default=default is not None,
        help=help,
    )


def out_option(help: str | None = None, *, metavar: str = "DIR", **kwargs) -> Callable:
    """``--out``: where a command writes (a folder, or a file named by ``metavar``)."""
    dest = "out_dir" if metavar == "DIR" else "out_path"
    return click.option("--out", dest, metavar=metavar, help=help, **kwargs)


def layer_option(help: str, *, multiple: bool = False) -> Callable:
    """``--layer``: a layer by name (repeatable where a command explains several)."""
    if multiple:
        return click.option("--layer", "layers", multiple=True, help=help)
    return click.option("--layer", help=help)


def model_option(help: str = "Use this model instead of a run's.") -> Callable:
    """``--model PATH.keras``: any Keras 3 classifier instead of a run's model."""
    return click.option("--model", "model_path", metavar="PATH.keras", help=help)


def split_option(choices: tuple[str, ...] = ("val", "test")) -> Callable:
    """``--split``: which of a run's splits (validation by default)."""
    return click.option(
        "--split", type=click.Choice(list(choices)), default="val", show_default=True
    )


def force_option(help: str) -> Callable:
    """``--force``: replace results that are already finished (never done without it)."""
    return click.option("--force", is_flag=True, help=help)


@contextlib.contextmanager
def run_writer(run_dir: str | None, out_dir: str | None = None) -> Iterator[None]:
    """Holds a run's writer's lock while a command writes into the run (its default output, or an
    ``out_dir`` inside it): while ``tfcam fit`` trains the run, the command exits 2 naming it.
    Writing elsewhere, or with no run, needs no lock."""
    from pathlib import Path

    if run_dir is None or (
        out_dir is not None and not Path(out_dir).resolve().is_relative_to(Path(run_dir).resolve())
    ):
        yield
        return
    from tfcam.runs import lock_run

    with lock_run(run_dir):
        yield


def run_and_inputs_argument() -> Callable:
    """``[RUN_DIR] INPUT...``: a run directory then images and folders (with --model, all inputs)."""
    return click.argument("paths", nargs=-1, metavar="[RUN_DIR] INPUT...")


def run_and_inputs(paths, model_path) -> tuple[str | None, list[str]]:
    """Splits ``[RUN_DIR] INPUT...`` into the run (checked) and the inputs; with ``--model``, all
    are inputs."""
    paths = list(paths)
    if model_path is not None:
        return None, paths
    if not paths:
        raise UserError("Give a run directory (or --model PATH.keras) and images")
    from tfcam.runs import Run

    Run(paths[0]).require_model()
    return paths[0], paths[1:]


def require_run(run_dir: str, model: bool = True) -> None:
    """Fails with one line, before TensorFlow loads, when ``run_dir`` is not a (finished) run."""
    from tfcam.runs import Run

    run = Run(run_dir)
    run.require_model() if model else run.require()


def write_bytes(path, data: bytes) -> None:
    """Writes a file atomically (nothing half-written if the command is interrupted)."""
    from pathlib import Path

    from tfcam.io import atomic_path

    with atomic_path(Path(path)) as tmp:
        Path(tmp).write_bytes(data)


def echo_table(csv_path) -> None:
    """A comparison table (``compare.csv``) printed as aligned text: metrics first, one column
    per run (:func:`tfcam.report.compare.transposed`)."""
    import pandas as pd

    from tfcam.report.compare import transposed

    table = pd.read_csv(csv_path, index_col="run")
    click.echo(transposed(table).to_string())

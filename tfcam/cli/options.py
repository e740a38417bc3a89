"""Options shared by several commands (one definition each, so a name means the same everywhere)
and the small helpers commands share.

Each option function returns a click decorator; where commands word a help text differently, the
text is a parameter and the option stays one definition.
"""

from __future__ import annotations

import contextlib
import functools
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


#: The splits a run can have; every command's ``--split`` takes the same names.
SPLITS = click.Choice(["train", "val", "test"])


def split_option() -> Callable:
    """``--split``: which of a run's splits (validation by default)."""
    return click.option(
        "--split",
        type=SPLITS,
        default="val",
        show_default=True,
        help="Which of the run's splits (one it has: see its metrics.json).",
    )


#: Shortcuts for the most common ``--set`` keys: option → (config key, type, metavar, help).
SHORTCUTS: dict[str, tuple[str, click.ParamType, str, str]] = {
    "epochs": (
        "train.epochs",
        click.IntRange(min=0),
        "N",
        "Phase 1 epochs (same as --set train.epochs=N).",
    ),
    "lr": (
        "train.learning_rate",
        click.FloatRange(min=0, min_open=True),
        "RATE",
        "Phase 1 learning rate (same as --set train.learning_rate=RATE).",
    ),
    "batch_size": (
        "data.batch_size",
        click.IntRange(min=1),
        "N",
        "Images per batch (same as --set data.batch_size=N).",
    ),
    "backbone": (
        "model.backbone",
        click.STRING,
        "NAME",
        "Backbone, e.g. resnet50, convnext_tiny, efficientnet_v2_b0, simple_cnn; `tfcam "
        "backbones` lists them (same as --set model.backbone=NAME).",
    ),
    "image_size": (
        "data.image_size",
        click.IntRange(min=8),
        "PX",
        "Side of the model input in pixels (same as --set data.image_size=PX).",
    ),
}


def shortcut_options(*names: str) -> Callable:
    """``--epochs``, ``--lr``, ``--batch-size``, ``--backbone``, ``--image-size`` (those named):
    each appends ``key=value`` to the command's ``overrides`` (``--set``), after the ``--set``
    values, so a shortcut wins over a ``--set`` of the same key."""
    chosen = names or tuple(SHORTCUTS)

    def apply(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            extra = []
            for name in chosen:
                value = kwargs.pop(name)
                if value is not None:
                    extra.append(f"{SHORTCUTS[name][0]}={value}")
            kwargs["overrides"] = (*kwargs.get("overrides", ()), *extra)
            return fn(*args, **kwargs)

        options = [
            click.option(f"--{name.replace('_', '-')}", name, type=tp, metavar=mv, help=text)
            for name in chosen
            for _key, tp, mv, text in [SHORTCUTS[name]]
        ]
        return _stack(*options)(wrapper)

    return apply


def method_option(default: tuple[str, ...], help: str) -> Callable:
    """``-m/--method``: explanation methods, repeatable and comma-separated (``-m gradcam -m
    scorecam`` or ``-m gradcam,scorecam``); ``--methods`` is a hidden alias kept for old
    scripts. The command receives ``methods``, a tuple of what was given."""

    def apply(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            alias = kwargs.pop("methods_alias")
            if alias:  # the alias replaces the default, and joins any -m/--method given
                source = click.get_current_context().get_parameter_source("methods")
                given = source is not click.core.ParameterSource.DEFAULT
                kwargs["methods"] = (*(kwargs["methods"] if given else ()), *alias)
            return fn(*args, **kwargs)

        return _stack(
            click.option(
                "-m",
                "--method",
                "methods",
                multiple=True,
                default=default,
                show_default=True,
                metavar="NAME[,NAME…]",
                help=help,
            ),
            click.option(
                "--methods", "methods_alias", multiple=True, hidden=True, help="Old name of -m."
            ),
        )(wrapper)

    return apply


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

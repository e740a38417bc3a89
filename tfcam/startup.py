"""What ``import tfcam`` sets up, without importing TensorFlow itself.

Two things must happen when TensorFlow and Keras load, whoever loads them (a notebook cell, a
script, ``keras.saving.load_model``), yet ``import tfcam`` has to stay cheap so that ``tfcam
--help`` answers at once. So ``import tfcam`` installs a finder on :data:`sys.meta_path` that
waits for the first ``import tensorflow`` and ``import keras`` (PEP 451: a finder may hand back
another finder's spec with a wrapped loader) and then:

- **keras**: imports :mod:`tfcam.models.layers`, whose ``@register_keras_serializable`` classes
  Keras looks up by their registered name (``tfcam>Preprocess``) when it rebuilds a saved model.
  When Keras is already loaded, registration happens at once.
- **tensorflow**: sets ``TF_CPP_MIN_LOG_LEVEL=2`` unless the user chose a level, holds file
  descriptor 2 in a temporary file while TensorFlow loads and probes its devices (the absl banner,
  the oneDNN and CUDA lines are printed there before any log level applies), writes back what is
  not such start-up chatter, and lowers absl's Python logging to errors. ``TFCAM_TF_LOGS=1``
  keeps everything.

The finder removes itself once both have loaded; it never changes how a module is found or run,
and puts back the module's own loader after it ran.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

#: TensorFlow's native start-up lines (also filtered by the command line's stderr pump).
NATIVE_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    rb"|E\d{4} [\d:. ]+ +\d+ cuda_(platform|executor|diagnostics)\.cc:\d+\] "
    rb"|To enable the following instructions: "
    rb"|E\d{4} [\d:. ]+ +\d+ util\.cc:\d+\] oneDNN supports DT_[A-Z0-9]+ only on platforms)"
)


def register_layers() -> None:
    """Registers tfcam's Keras layers (importing Keras if it is not loaded yet)."""
    import tfcam.models.layers  # noqa: F401 - the decorators register on import


def _register_quietly() -> None:
    # Called while the user's ``import keras`` runs: a failure here must not fail their import.
    try:
        register_layers()
    except Exception as e:  # reported, never raised into the import
        import warnings

        warnings.warn(f"tfcam: could not register its Keras layers: {e}", stacklevel=2)


def quiet_native_logs() -> bool:
    """Whether TensorFlow's native start-up lines are kept off stderr (``TFCAM_TF_LOGS=1``: no)."""
    return os.environ.get("TFCAM_TF_LOGS") != "1"


class _HeldStderr:
    """File descriptor 2 redirected to a temporary file; :meth:`release` writes back the lines
    that are not TensorFlow start-up chatter."""

    def __init__(self):
        for stream in (sys.stdout, sys.stderr, sys.__stderr__):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        self.saved = os.dup(2)
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 - closed in release()
        os.dup2(self.file.fileno(), 2)

    def release(self) -> None:
        try:
            if sys.__stderr__ is not None:
                sys.__stderr__.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        kept = b"".join(line for line in self.file if not NATIVE_NOISE.match(line))
        self.file.close()
        if kept:
            os.write(2, kept)


def _before_tensorflow():
    if not quiet_native_logs():
        return None
    try:
        return _HeldStderr()
    except OSError:  # no file descriptor 2 (a detached service): nothing to keep clean
        return None


def _after_tensorflow(module, held) -> None:
    try:
        if held is not None:
            # The CUDA probe prints when devices are first listed, not at import.
            module.config.list_physical_devices()
            from absl import logging as absl_logging

            if absl_logging.get_verbosity() == absl_logging.WARNING:  # the user's choice stays
                absl_logging.set_verbosity(absl_logging.ERROR)
    finally:
        if held is not None:
            held.release()


class _Loader(importlib.abc.Loader):
    """Runs a module with another loader, with something done before and after."""

    def __init__(self, inner, name: str):
        self.inner, self.name = inner, name

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self.inner  # nothing of ours stays
        held = _before_tensorflow() if self.name == "tensorflow" else None
        try:
            self.inner.exec_module(module)
        except BaseException:
            if held is not None:
                held.release()
            raise
        if self.name == "tensorflow":
            _after_tensorflow(module, held)
        else:
            _register_quietly()


class _Finder(importlib.abc.MetaPathFinder):
    """Hands out the usual spec of ``tensorflow`` and ``keras`` with a :class:`_Loader`."""

    def __init__(self, names: set[str]):
        self.names = names
        self.busy: set[str] = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.names or fullname in self.busy:
            return None
        self.busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)  # the other finders' answer
        finally:
            self.busy.discard(fullname)
        self.names.discard(fullname)
        if not self.names and self in sys.meta_path:
            sys.meta_path.remove(self)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader, fullname)
        return spec


def install() -> None:
    """Sets up registration and quiet start-up for whatever is not loaded yet (idempotent)."""
    waiting = set()
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        waiting.add("tensorflow")
    if "keras" in sys.modules:
        register_layers()
    else:
        waiting.add("keras")
    if waiting and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(waiting))

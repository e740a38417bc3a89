"""``--strategy``: one experiment on one device, several GPUs, or several machines.

* ``none``: TensorFlow's default strategy (one device).
* ``mirrored``: ``tf.distribute.MirroredStrategy`` over this machine's GPUs (the CPU when it
  has none, where it is equivalent to ``none``).
* ``multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy``; the cluster and this worker's
  place in it come from the ``TF_CONFIG`` environment variable, e.g.
  ``{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}``.
  Every worker runs the same ``tfcam fit`` command (each with its own ``--run-dir`` when they
  share a disk); worker 0 is the chief and writes the report.
* ``auto``: ``multiworker`` when ``TF_CONFIG`` names more than one worker, ``mirrored`` when
  there are two or more GPUs, else ``none``.

The global batch is ``data.batch_size``: it is split over the replicas, so the same experiment
gives the same optimisation whatever the number of machines.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from tfcam.errors import UserError

log = logging.getLogger("tfcam")

STRATEGIES = ("auto", "none", "mirrored", "multiworker")


@dataclass
class Placement:
    """The strategy and where this process stands in it."""

    strategy: Any
    name: str
    workers: int = 1
    index: int = 0

    @property
    def is_chief(self) -> bool:
        return self.index == 0

    @property
    def distributed(self) -> bool:
        return self.name != "none"


def read_tf_config() -> dict | None:
    """The parsed ``TF_CONFIG``, or None when it is unset.

    Raises:
        UserError: It is not JSON, or lacks ``cluster.worker`` and ``task``.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        task = cfg["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError):
        raise UserError(
            'TF_CONFIG must be JSON like {"cluster": {"worker": ["host:port", …]}, '
            '"task": {"type": "worker", "index": 0}}'
        ) from None
    if not isinstance(workers, list) or not workers or not 0 <= index < len(workers):
        raise UserError(
            f"TF_CONFIG task index {index} is not one of the {len(workers)} workers it lists"
        )
    return cfg


def choose(name: str) -> str:
    """Resolves ``auto`` and checks the name (no TensorFlow import for a bad name)."""
    if name not in STRATEGIES:
        from tfcam.errors import choices_message

        raise UserError(choices_message("strategy", name, STRATEGIES))
    tf_config = read_tf_config()
    if name == "multiworker" and tf_config is None:
        raise UserError(
            "--strategy multiworker reads the cluster from TF_CONFIG, which is not set; e.g. "
            'TF_CONFIG=\'{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
            '"task": {"type": "worker", "index": 0}}\''
        )
    if name != "auto":
        return name
    if tf_config is not None and len(tf_config["cluster"]["worker"]) > 1:
        return "multiworker"
    import tensorflow as tf

    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "none"


def make_strategy(name: str) -> Placement:
    """Creates the strategy. Must run before any other TensorFlow work in a multi-worker run
    (TensorFlow fixes the cluster when its runtime starts).

    Raises:
        UserError: Unknown name, or ``multiworker`` without ``TF_CONFIG``.
    """
    import tensorflow as tf

    resolved = choose(name)
    if resolved == "none":
        return Placement(tf.distribute.get_strategy(), "none")
    if resolved == "mirrored":
        s = tf.distribute.MirroredStrategy()
        log.info("Strategy: mirrored over %d replica(s)", s.num_replicas_in_sync)
        return Placement(s, "mirrored")
    cfg = read_tf_config()
    patch_keras_multiworker()
    s = tf.distribute.MultiWorkerMirroredStrategy()
    workers = len(cfg["cluster"]["worker"])
    index = int(cfg["task"]["index"])
    log.info(
        "Strategy: multiworker, worker %d of %d (%s), %d replica(s) in all",
        index,
        workers,
        "chief" if index == 0 else "not chief",
        s.num_replicas_in_sync,
    )
    return Placement(s, "multiworker", workers, index)


def shard_by_data(dataset):
    """Shards a dataset by elements, not files (tfcam's datasets list files in tensors)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def patch_keras_multiworker() -> None:
    """Works around two faults of Keras 3's TensorFlow trainer under
    ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585; still present in Keras 3.15):

    * before the first step, ``_maybe_symbolic_build`` passes the whole distributed batch, a
      tuple, to ``strategy.reduce``, which the collective strategy cannot reduce; the symbolic
      build only needs shapes, so this worker's first replica batch is used instead;
    * after every step, ``reduce_per_replica`` averages each logged value with
      ``strategy.reduce("MEAN", v, axis=0)``, which fails for the scalar loss and metrics; a scalar
      is averaged over the replicas (``axis=None``) instead.

    Training itself (gradients all-reduced over the workers) is Keras's own. Applied once, and only
    by a multi-worker run.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_tfcam_patched", False):
        return
    original_reduce = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if not tf_trainer._collective_all_reduce_multi_worker(strategy):
            return original_reduce(values, strategy, reduction)
        resolved = "mean" if reduction == "auto" else reduction

        def one(v):
            local = (
                strategy.experimental_local_results(v)[0]
                if tf_trainer._is_per_replica_instance(v)
                else v
            )
            shape = getattr(local, "shape", None)
            if resolved == "mean" and shape is not None and shape.rank == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return original_reduce(v, strategy, reduction)

        return tree.map_structure(one, values)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda x: (
                        strategy.experimental_local_results(x)[0]
                        if isinstance(x, tf.distribute.DistributedValues)
                        else x
                    ),
                    batch,
                )
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer._tfcam_patched = True

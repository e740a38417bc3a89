"""What the explorer serves: the runs under a path, their images, and heatmaps computed on demand.

A :class:`ServedRun` reads a finished run's files (``class_names.json``, ``predictions_<split>.csv``,
``splits.csv``, ``config.yaml``) at once and loads its model the first time a heatmap is asked for:
one model and one :class:`~tfcam.explain.engine.Explainer` per run, every TensorFlow call under
the run's lock (Keras models are not safe to call from several threads at once, and one CPU
gains nothing from it). Heatmaps are cached in a bounded LRU, so switching back is instant.

Images are named by id, never by path: ``val-12`` is row 12 of the run's validation predictions,
``upload-<sha256 prefix>`` a photo a user sent. Files are served only from the run's own folder
and its data folder (the common folder of its split files), after resolving symlinks.

This module imports TensorFlow only when a model is first needed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfcam.errors import UserError, choices_message
from tfcam.serve import quality, uploads
from tfcam.serve.cache import LRU
from tfcam.serve.paths import NotFound, find_runs, inside, photo_side

#: Splits a run may have predictions for.
SPLITS = ("val", "test", "train")
#: Heatmaps kept per run (a 224 px map is 200 KB as float32: 256 of them about 50 MB).
CACHE_ENTRIES = 256
#: Decoded images kept per run (model input and photo: about 1.4 MB each at 224 px).
READS_KEPT = 32
#: Uploaded photos kept per run.
UPLOADS_KEPT = 64
#: Largest upload accepted (bytes); ``tfcam serve --max-upload-mb`` changes it.
MAX_UPLOAD = 20 * 1024 * 1024
#: How the heatmap is blended over the photo in the PNG overlay.
OVERLAY_ALPHA = 0.5
#: Sort orders of :meth:`ServedRun.images`.
SORTS = ("index", "confidence", "-confidence", "wrong_first")
#: Layer types that only rescale pixels: no CAM there.
_PIXEL_LAYERS = ("Preprocess", "FillPadding", "Rescaling", "Normalization", "InputLayer")
#: Filters of :meth:`ServedRun.images`.
FILTERS = ("all", "correct", "misclassified", "confident_wrong")


@dataclass
class _Image:
    """One image the explorer knows: where it is, and what the run said about it."""

    id: str
    path: Path
    true: str | None
    predicted: str | None
    probability: float | None


@dataclass
class Heatmap:
    """One computed heatmap, as cached."""

    heatmap: np.ndarray  # float32 [H, W] in [0, 1], on the model's input
    probabilities: np.ndarray  # float32 [C]
    target: int
    score: float
    layer: str | None
    constant: bool


@dataclass
class _Upload:
    image: _Image
    model_input: np.ndarray
    photo: np.ndarray
    full_hw: tuple[int, int]
    probabilities: np.ndarray


@dataclass
class ServedRun:
    """One run as the explorer serves it (files read at once; the model when first needed)."""

    path: Path
    name: str
    class_names: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        from tfcam.runs import Run

        run = Run(self.path).require_model()
        self._run = run
        self.class_names = run.class_names()
        self.config = run.raw_config()
        self._splits: dict[str, list[_Image]] = {}
        for split in SPLITS:
            p = run.predictions_path(split)
            if p.is_file():
                df = pd.read_csv(p)
                self._splits[split] = [
                    _Image(
                        f"{split}-{i}",
                        Path(row.path),
                        str(row.label),
                        str(row.predicted),
                        float(row.confidence),
                    )
                    for i, row in enumerate(df.itertuples(index=False))
                ]
        paths = [str(im.path) for images in self._splits.values() for im in images]
        self.data_root = Path(os.path.commonpath(paths)).resolve() if paths else None
        if self.data_root is not None and self.data_root.is_file():
            self.data_root = self.data_root.parent
        self._model_lock = threading.RLock()
        self._source = None
        self._explainers: dict[str, Any] = {}
        self._boxes: dict | None = None
        self._by_path: dict[str, str] | None = None
        self._final_weights: list | None = None
        self._reads = LRU(READS_KEPT)  # decoded images: switching method reads none again
        self._pngs = LRU(CACHE_ENTRIES)
        self._cache = LRU(CACHE_ENTRIES)
        self._uploads = LRU(UPLOADS_KEPT)
        self._upload_dir = tempfile.TemporaryDirectory(prefix="tfcam-serve-")

    # What the run holds ----------------------------------------------------------------------
    @property
    def splits(self) -> list[str]:
        return list(self._splits)

    def summary(self) -> dict[str, Any]:
        """The ``/api/runs`` entry."""
        model = self.config.get("model", {})
        data = self.config.get("data", {})
        metrics = self._run.metrics() if self._run.metrics_path.is_file() else {}
        return {
            "name": self.name,
            "path": str(self.path),
            "backbone": model.get("backbone"),
            "image_size": data.get("image_size"),
            "classes": self.class_names,
            "splits": {s: len(v) for s, v in self._splits.items()},
            "accuracy": {s: m.get("accuracy") for s, m in metrics.items() if isinstance(m, dict)},
            "epochs": self.epochs(),
        }

    def epochs(self) -> list[int]:
        """Epochs with a kept checkpoint (``checkpoints/epoch_<E>.weights.h5``)."""
        out = []
        for p in self._run.checkpoints.glob("epoch_*.weights.h5"):
            tail = p.name.removeprefix("epoch_").removesuffix(".weights.h5")
            if tail.isdigit():
                out.append(int(tail))
        return sorted(out)

    def split_images(self, split: str) -> list[_Image]:
        if split not in self._splits:
            raise NotFound(
                choices_message(f"split of run '{self.name}'", split, list(self._splits))
                if self._splits
                else f"Run '{self.name}' has no predictions (run tfcam evaluate on it first)"
            )
        return self._splits[split]

    def images(
        self,
        split: str = "val",
        *,
        filter: str = "all",
        true: str | None = None,
        predicted: str | None = None,
        min_p: float = 0.0,
        max_p: float = 1.0,
        sort: str = "index",
        offset: int = 0,
        limit: int = 60,
    ) -> dict[str, Any]:
        """The gallery: one page of a split's images after filters and sorting, the number that
        matched, and the split's top confusions (true → predicted, most frequent first)."""
        if filter not in FILTERS:
            raise UserError(choices_message("filter", filter, list(FILTERS)))
        if sort not in SORTS:
            raise UserError(choices_message("sort", sort, list(SORTS)))
        for name, value in (("true", true), ("predicted", predicted)):
            if value is not None and value not in self.class_names:
                raise UserError(choices_message(f"class ({name})", value, self.class_names))
        rows = self.split_images(split)
        confusions: dict[tuple[str, str], int] = {}
        for im in rows:
            if im.true != im.predicted:
                key = (im.true, im.predicted)
                confusions[key] = confusions.get(key, 0) + 1
        picked = [
            im
            for im in rows
            if (filter in ("all", "correct") or im.true != im.predicted)
            and (filter != "correct" or im.true == im.predicted)
            and (true is None or im.true == true)
            and (predicted is None or im.predicted == predicted)
            and min_p <= (im.probability if im.probability is not None else 0.0) <= max_p
        ]
        if filter == "confident_wrong" or sort == "-confidence":
            picked.sort(key=lambda im: -(im.probability or 0.0))
        elif sort == "confidence":
            picked.sort(key=lambda im: im.probability or 0.0)
        elif sort == "wrong_first":
            picked.sort(key=lambda im: im.true == im.predicted)
        page = picked[max(offset, 0) : max(offset, 0) + max(min(limit, 500), 1)]
        return {
            "run": self.name,
            "split": split,
            "total": len(picked),
            "offset": offset,
            "images": [self._describe(im) for im in page],
            "confusions": [
                {"true": t, "predicted": p, "count": n}
                for (t, p), n in sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
            ],
        }

    def _describe(self, im: _Image) -> dict[str, Any]:
        rel = None
        if self.data_root is not None:
            try:
                rel = im.path.resolve().relative_to(self.data_root).as_posix()
            except (ValueError, OSError):
                rel = None
        return {
            "id": im.id,
            "path": rel,
            "true": im.true,
            "predicted": im.predicted,
            "probability": im.probability,
        }

    def box(self, image_id: str) -> tuple[int, int, int, int] | None:
        """The target's box ``(x0, y0, x1, y1)`` in the stored image's pixels, where the run's
        data has boxes (the ``shapes`` datasets' ``boxes.csv``); else None."""
        if self._boxes is None:
            self._boxes = quality.load_boxes(self._run)
        if not self._boxes or image_id.startswith("upload-"):
            return None
        return self._boxes.get(str(self.image(image_id).path.resolve()))

    def box_info(self, image_id: str) -> dict[str, list[float]] | None:
        """The box as the API gives it: stored-image ``pixels`` and ``fraction`` of the photo."""
        box = self.box(image_id)
        return None if box is None else quality.box_info(box, self._read(self.image(image_id))[2])

    def quality(self, h: Heatmap, image_id: str) -> dict[str, Any] | None:
        """Energy in the box and the pointing game of one heatmap, where the image has a box."""
        box = self.box(image_id)
        if box is None:
            return None
        return quality.scores(h.heatmap, box, self._read(self.image(image_id))[2], *self._input())

    def evaluation(self) -> dict[str, Any] | None:
        """The run's last ``tfcam evaluate-cams`` table, or None."""
        return quality.evaluation(self.path)

    def image(self, image_id: str) -> _Image:
        """The image of an id (``val-12``, ``upload-…``).

        Raises:
            NotFound: An id this run does not have, in one line.
        """
        split, _, index = str(image_id).rpartition("-")
        if split == "upload":
            up = self._uploads.get(image_id)
            if up is None:
                raise NotFound(
                    f"Unknown image '{image_id}' in run '{self.name}' (uploads are kept for this session only)"
                )
            return up.image
        if split in self._splits and index.isdigit() and int(index) < len(self._splits[split]):
            return self._splits[split][int(index)]
        raise NotFound(
            f"Unknown image '{image_id}' in run '{self.name}'. Use an id from /api/images "
            f"(like {next(iter(self._splits), 'val')}-0)"
        )

    def same_image(self, other: ServedRun, image_id: str) -> str:
        """This run's id of the file that is image ``image_id`` of run ``other`` (runs side by
        side: ids are rows of each run's own predictions).

        Raises:
            NotFound: This run has no such file among its splits.
        """
        path = other.image(image_id).path
        if self._by_path is None:
            self._by_path = {}
            for images in self._splits.values():
                for im in images:
                    self._by_path.setdefault(str(im.path.resolve()), im.id)
        found = self._by_path.get(str(path.resolve()))
        if found is None:
            raise NotFound(
                f"Run '{self.name}' has no image '{path.name}' (image '{image_id}' of run "
                f"'{other.name}') among its predictions"
            )
        return found

    def data_file(self, rel: str) -> Path:
        """A file of the run's data folder by its path relative to it (what ``/api/images``
        gives), resolved; anything outside the folder (``..``, absolute paths, symlinks out) is
        not found."""
        if self.data_root is None or not rel:
            raise NotFound(f"No file '{rel}' in the data of run '{self.name}'")
        return inside(self.data_root, rel, f"the data of run '{self.name}'")

    # The model -------------------------------------------------------------------------------
    def explainer(self, score: str = "logit"):
        """The run's explainer for a score (``logit``/``probability``: the score is compiled
        into its functions), the model loaded once (under the run's lock)."""
        with self._model_lock:
            if self._source is None:
                from tfcam.explain.files import from_run

                self._source = from_run(self.path)
                self._explainers = {}
            if score not in self._explainers:
                from tfcam.explain.engine import Explainer

                ex = Explainer(
                    self._source.model,
                    class_names=self._source.class_names,
                    score=score,
                    batch_size=1,
                    input_size=self._source.image_size,
                )
                ex.resize = self._source.resize
                self._explainers[score] = ex
            return self._explainers[score]

    def methods(self) -> list[dict[str, str]]:
        """The methods of ``--list-methods`` that apply to this run's model."""
        from tfcam.explain.methods import ATTENTION, TABLE
        from tfcam.models.registry import BACKBONES

        row = BACKBONES.get(self.config.get("model", {}).get("backbone") or "")
        transformer = bool(row and row.transformer)
        return [
            {"name": m.name, "kind": m.kind, "description": m.description}
            for m in TABLE.values()
            if transformer or m.kind != ATTENTION
        ]

    def layers(self) -> dict[str, Any]:
        """The layers a CAM can use, and the default."""
        from tfcam.explain.engine import default_layer, explainable_layers

        ex = self.explainer()
        with self._model_lock:
            usable = explainable_layers(ex.model, ex.input_size)
            default = default_layer(ex.model, ex.input_size)
        cut = set()
        if ex.tokens:
            from tfcam.explain.tokens import unreachable_patches

            cut = unreachable_patches(ex.model, ex.tokens, list(ex.token_layers))
        # The pixel layers before the network (tfcam's ``preprocess``) get no gradient.
        skip = {la.name for la in ex.model.layers if type(la).__name__ in _PIXEL_LAYERS}
        return {"default": default, "layers": [n for n in usable if n not in cut | skip]}

    def _read(self, im: _Image) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """(model input float32 [H, W, 3], photo uint8, the stored image's (height, width))."""
        if im.id.startswith("upload-"):
            up = self._uploads.get(im.id)
            return up.model_input, up.photo, up.full_hw
        hit = self._reads.get(im.id)
        if hit is None:
            from tfcam.data.display import read_for_explanation

            size, resize = self._input()
            hit = read_for_explanation(im.path, size, resize, photo_side(im.path))
            self._reads.put(im.id, hit)
        return hit

    def heatmap_png(
        self, image_id: str, style: str = "overlay", **options
    ) -> tuple[Heatmap, bytes]:
        """:meth:`heatmap` and its PNG as :meth:`drawn` draws it, both cached."""
        from tfcam.viz.png import encode_png

        h = self.heatmap(image_id, **options)
        key = (image_id, style, tuple(sorted(options.items())))
        png = self._pngs.get(key)
        if png is None:
            png = encode_png(self.drawn(image_id, h, style))
            self._pngs.put(key, png)
        return h, png

    def drawn(self, image_id: str, h: Heatmap, style: str = "overlay") -> np.ndarray:
        """The heatmap in the photo's own frame (uint8 RGB at the photo's size): blended over it
        (``overlay``) or coloured alone (``map``, black where the model saw nothing of the photo,
        as in ``crop`` mode), placed as ``tfcam explain`` places it for the run's resize mode."""
        from tfcam.data.display import input_window
        from tfcam.viz.overlay import colorize, place

        _, photo, full_hw = self._read(self.image(image_id))
        size, resize = self._input()
        window = input_window(full_hw, size, resize)
        heat, inside = place(h.heatmap, window.input_box, window.image_box, photo.shape[:2])
        colour = colorize(heat)
        colour[~inside] = 0
        if style == "map":
            return colour
        blend = photo.astype(np.float32) * (1 - OVERLAY_ALPHA) + colour * OVERLAY_ALPHA
        out = np.clip(blend.round(), 0, 255).astype(np.uint8)
        out[~inside] = photo[~inside]
        return out

    def _input(self) -> tuple[tuple[int, int], str]:
        """The model's input size and resize mode, from the run's config (no model loaded)."""
        data = self.config.get("data", {})
        side = int(data.get("image_size", 224))
        return (side, side), str(data.get("resize", "stretch"))

    def photo(self, image_id: str, longer_side: int | None = None) -> np.ndarray:
        """The image as a person sees it (uint8 RGB, longer side at most :data:`PHOTO_SIDE`, or
        ``longer_side``); reads no model."""
        im = self.image(image_id)
        photo = self._read(im)[1]
        if longer_side and max(photo.shape[:2]) > longer_side:
            import cv2

            h, w = photo.shape[:2]
            scale = longer_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            photo = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
        return photo

    def heatmap(
        self,
        image_id: str,
        method: str = "gradcam",
        *,
        target: str | None = None,
        layer: str | None = None,
        score: str = "logit",
        epoch: int | None = None,
    ) -> Heatmap:
        """One heatmap, from the cache or computed (under the run's lock).

        Raises:
            UserError: An unknown method, class, layer, score or epoch (the CLI's messages).
            NotFound: An unknown image.
        """
        from tfcam.explain.methods import ATTENTION, TABLE

        im = self.image(image_id)
        if method not in TABLE:
            raise UserError(choices_message("method", method, [m["name"] for m in self.methods()]))
        if score not in ("logit", "probability"):
            raise UserError(f"Unknown score '{score}'. Choose from: logit, probability")
        if target is not None and target not in self.class_names:
            if not (target.isdigit() and int(target) < len(self.class_names)):
                raise UserError(choices_message("class", target, self.class_names))
            target = self.class_names[int(target)]
        if epoch is not None and epoch not in self.epochs():
            kept = self.epochs()
            raise UserError(
                f"Run '{self.name}' kept no checkpoint of epoch {epoch}. "
                + (f"Choose from: {', '.join(map(str, kept))}" if kept else
                   "It kept none (train.keep_epoch_checkpoints)")
            )  # fmt: skip
        key = (image_id, method, target, layer, score, epoch)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._model_lock:
            hit = self._cache.get(key)
            if hit is not None:
                return hit
            ex = self.explainer(score)
            layers = None
            if TABLE[method].uses_layer and TABLE[method].kind != ATTENTION:
                layers = list(ex.resolve_layers(layer))
            elif layer is not None:
                ex.resolve_layers(layer)  # checked, though this method does not use it
            x = self._read(im)[0]
            result = self._explain(ex, x, method, target, layers, score, epoch)
            self._cache.put(key, result)
            return result

    def _explain(self, ex, x, method, target, layers, score, epoch) -> Heatmap:
        from tfcam.explain.api import explain

        restore = None
        try:
            if epoch is not None:
                if self._final_weights is None:  # the trained model's, copied once
                    self._final_weights = [w.numpy() for w in ex.model.weights]
                restore = self._final_weights
                ex.model.load_weights(self._run.checkpoints / f"epoch_{epoch}.weights.h5")
            options = {"targets": target}
            if layers is not None:
                options["layers"] = layers
            e = explain(ex, x[None], method, **options)
        finally:
            if restore is not None:
                ex.model.set_weights(restore)
        return Heatmap(
            heatmap=np.asarray(e.heatmap[0], np.float32),
            probabilities=np.asarray(e.probabilities[0], np.float32),
            target=int(e.targets[0]),
            score=float(e.scores[0]),
            layer=layers[0] if layers else None,
            constant=bool(np.asarray(next(iter(e.constant.values())))[0]) if e.constant else False,
        )

    # Uploads ---------------------------------------------------------------------------------
    def upload(self, data: bytes, filename: str = "upload", limit: int = MAX_UPLOAD) -> dict:
        """A user's photo: checked, decoded by the training loader, predicted; its id.

        Raises:
            TooLarge: Over ``limit`` bytes.
            UserError: Empty, or not an image the loader reads (its reason).
        """
        uploads.check(data, limit)
        digest = hashlib.sha256(data).hexdigest()[:16]
        image_id = f"upload-{digest}"
        known = self._uploads.get(image_id)
        if known is None:
            with self._model_lock:
                path, x, photo, full_hw, probs = uploads.read(
                    data, filename, Path(self._upload_dir.name) / digest, self.explainer()
                )
            predicted = self.class_names[int(np.argmax(probs))]
            im = _Image(image_id, path, None, predicted, float(np.max(probs)))
            known = _Upload(im, x, photo, tuple(full_hw), probs)
            self._uploads.put(image_id, known)
        return {
            "id": image_id,
            "predicted": known.image.predicted,
            "probability": known.image.probability,
            "probabilities": dict(
                zip(self.class_names, map(float, known.probabilities), strict=True)
            ),
        }

    def warm(self) -> None:
        """Reads one image, so the first page's thumbnails do not wait for TensorFlow to load."""
        for images in self._splits.values():
            if images:
                try:
                    self.photo(images[0].id, 16)
                except UserError:
                    pass
                return

    def close(self) -> None:
        self._upload_dir.cleanup()


class RunSet:
    """The runs of ``tfcam serve PATH``, by unique name (the folder name, with its parent's when
    two share one)."""

    def __init__(self, paths: list[Path]):
        names: dict[str, Path] = {}
        for p in paths:
            name = p.name
            if name in names or not name:
                name = f"{p.parent.name}/{p.name}"
            names[name] = p
        self.runs = {name: ServedRun(path, name) for name, path in names.items()}

    @classmethod
    def at(cls, path: str | os.PathLike) -> RunSet:
        return cls(find_runs(path))

    def get(self, name: str | None) -> ServedRun:
        if not name:
            if len(self.runs) == 1:
                return next(iter(self.runs.values()))
            raise UserError(choices_message("run", "", list(self.runs)).replace("''", "(none)"))
        if name not in self.runs:
            raise NotFound(choices_message("run", name, list(self.runs)))
        return self.runs[name]

    def close(self) -> None:
        for run in self.runs.values():
            run.close()


def as_json(obj) -> str:
    return json.dumps(obj, allow_nan=False, default=float)

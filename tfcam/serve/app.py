"""The explorer as one WSGI application (werkzeug), for ``tfcam serve`` and for TensorBoard.

Routes (all under the application's root, so the same app works at ``/`` and inside
TensorBoard's ``/data/plugin/tfcam/``; the pages use relative URLs):

==========================  =================================================================
``GET /``                   the explorer page
``GET /static/<file>``      its scripts and styles (only the package's own files)
``GET /api/runs``           JSON: every run with classes, splits, accuracy, kept epochs
``GET /api/images``         JSON: a page of a split's images (``run``, ``split``, ``filter``,
                            ``true``, ``predicted``, ``min_p``, ``max_p``, ``sort``,
                            ``offset``, ``limit``) and the top confusions
``GET /api/methods``        JSON: the methods and layers that apply to a run
``GET /api/photo``          PNG: an image as a person sees it (``run``, ``image``,
                            ``size=thumb`` for the gallery's)
``GET /api/file``           a file of the run's data by its relative path (``run``, ``path``)
``GET /api/heatmap``        PNG overlay (``style=map``: the coloured map alone) or JSON
                            (``format=json``): ``run``, ``image``, ``method``, ``target``,
                            ``layer``, ``score``, ``epoch``; ``of=RUN2``: ``image`` is an id
                            of run ``RUN2``, explained by ``run`` (runs side by side)
``POST /api/upload``        multipart ``file``: JSON with the new image id and the prediction
==========================  =================================================================

Errors are JSON ``{"error": "<the CLI's one line>"}`` with 400 (bad value), 403 (no token), 404
(unknown run, image or file), 413 (upload too large) or 405; an unexpected failure is a 500 with its type only
(the traceback goes to the server's log, never to the client).

When a token is set (``tfcam serve`` sets one for any host but the loopback), every request needs
it, as ``?token=`` once (a cookie keeps it for the page's own requests) or the header
``Authorization: token <token>``.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
from importlib import resources

import numpy as np
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.exceptions import NotFound as WzNotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from tfcam.errors import UserError
from tfcam.serve.paths import NotFound, TooLarge
from tfcam.serve.runs import MAX_UPLOAD, RunSet, as_json

log = logging.getLogger("tfcam")

#: The explorer's own files (``tfcam/serve/static``), served by name only.
STATIC = ("index.html", "app.js", "style.css")
COOKIE = "tfcam_token"
#: Longer side of the gallery's thumbnails (``/api/photo?size=thumb``).
THUMB_SIDE = 192


def _static(name: str) -> bytes:
    return resources.files("tfcam.serve").joinpath("static", name).read_bytes()


class Explorer:
    """The WSGI application of ``tfcam serve`` (and of the TensorBoard plugin).

    Args:
        runs: The runs to serve.
        token: Required on every request when set (see the module's docstring).
        max_upload: Largest upload in bytes.
    """

    def __init__(self, runs: RunSet, *, token: str | None = None, max_upload: int = MAX_UPLOAD):
        self.runs = runs
        self.token = token
        self.max_upload = int(max_upload)
        self.url_map = Map(
            [
                Rule("/", endpoint="index", methods=["GET"]),
                Rule("/static/<name>", endpoint="static", methods=["GET"]),
                Rule("/api/runs", endpoint="runs", methods=["GET"]),
                Rule("/api/images", endpoint="images", methods=["GET"]),
                Rule("/api/methods", endpoint="methods", methods=["GET"]),
                Rule("/api/photo", endpoint="photo", methods=["GET"]),
                Rule("/api/file", endpoint="file", methods=["GET"]),
                Rule("/api/heatmap", endpoint="heatmap", methods=["GET"]),
                Rule("/api/upload", endpoint="upload", methods=["POST"]),
            ],
            strict_slashes=False,
        )

    # WSGI ------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        request = Request(environ)
        request.max_content_length = self.max_upload + 1024 * 1024  # the multipart envelope
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        try:
            cookie = self._check_token(request)
            adapter = self.url_map.bind_to_environ(request.environ)
            endpoint, values = adapter.match()
            response = getattr(self, f"on_{endpoint}")(request, **values)
            if cookie:
                response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict")
            return response
        except _Forbidden:
            return _error(
                "This server needs its token: open the address tfcam serve printed (…/?token=…)",
                403,
            )
        except TooLarge as e:
            return _error(str(e), 413)
        except NotFound as e:
            return _error(str(e), 404)
        except UserError as e:
            return _error(str(e), 400)
        except MethodNotAllowed:
            return _error(f"Method {request.method} is not allowed on {request.path}", 405)
        except WzNotFound:
            return _error(f"Nothing at {request.path}", 404)
        except HTTPException as e:
            if e.code == 413:
                return _error(f"Upload over the limit of {self.max_upload / 2**20:.0f} MB", 413)
            return _error(e.description or e.name, e.code or 400)
        except Exception as e:  # a bug: logged with its traceback here, one line to the client
            log.exception("tfcam serve: %s %s failed", request.method, request.path)
            return _error(f"Internal error ({type(e).__name__}); see the server's log", 500)

    def _check_token(self, request: Request) -> str | None:
        """None when allowed without setting a cookie; the token to set as a cookie; or raises."""
        if not self.token:
            return None
        given = request.args.get("token")
        header = request.headers.get("Authorization", "")
        if header.startswith("token "):
            given = header[6:]
        if given and hmac.compare_digest(given, self.token):
            return given if request.args.get("token") else None
        cookie = request.cookies.get(COOKIE)
        if cookie and hmac.compare_digest(cookie, self.token):
            return None
        raise _Forbidden()

    # Pages -----------------------------------------------------------------------------------
    def on_index(self, request):
        return Response(_static("index.html"), mimetype="text/html")

    def on_static(self, request, name):
        if name not in STATIC:
            raise NotFound(f"No file '{name}' in the explorer's static files")
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".js"):
            mime = "text/javascript"
        return Response(_static(name), mimetype=mime, headers={"Cache-Control": "no-cache"})

    # API -------------------------------------------------------------------------------------
    def on_runs(self, request):
        return _json({"runs": [r.summary() for r in self.runs.runs.values()]})

    def on_images(self, request):
        a = request.args
        run = self.runs.get(a.get("run"))
        page = run.images(
            a.get("split", "val"),
            filter=a.get("filter", "all"),
            true=a.get("true") or None,
            predicted=a.get("predicted") or None,
            min_p=_number(a, "min_p", 0.0),
            max_p=_number(a, "max_p", 1.0),
            sort=a.get("sort", "index"),
            offset=int(_number(a, "offset", 0)),
            limit=int(_number(a, "limit", 60)),
        )
        return _json(page)

    def on_methods(self, request):
        run = self.runs.get(request.args.get("run"))
        return _json(
            {
                "run": run.name,
                "methods": run.methods(),
                **run.layers(),
                "evaluate_cams": run.evaluation(),
            }
        )

    def on_photo(self, request):
        from tfcam.viz.png import encode_png

        a = request.args
        run = self.runs.get(a.get("run"))
        size = a.get("size", "full")
        if size not in ("full", "thumb"):
            raise UserError(f"Unknown size '{size}'. Choose from: full, thumb")
        photo = run.photo(_required(a, "image"), THUMB_SIDE if size == "thumb" else None)
        return Response(encode_png(photo), mimetype="image/png",
                        headers={"Cache-Control": "max-age=3600"})  # fmt: skip

    def on_file(self, request):
        a = request.args
        run = self.runs.get(a.get("run"))
        path = run.data_file(_required(a, "path"))
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return Response(path.read_bytes(), mimetype=mime)

    def on_heatmap(self, request):
        a = request.args
        run = self.runs.get(a.get("run"))
        fmt, style = a.get("format", "png"), a.get("style", "overlay")
        if fmt not in ("png", "json"):
            raise UserError(f"Unknown format '{fmt}'. Choose from: png, json")
        if style not in ("overlay", "map"):
            raise UserError(f"Unknown style '{style}'. Choose from: overlay, map")
        epoch = a.get("epoch")
        if epoch is not None and not epoch.isdigit():
            raise UserError(f"Invalid epoch '{epoch}' (a whole number)")
        options = {
            "method": a.get("method", "gradcam"),
            "target": a.get("target") or None,
            "layer": a.get("layer") or None,
            "score": a.get("score", "logit"),
            "epoch": int(epoch) if epoch is not None else None,
        }
        image = _required(a, "image")
        if a.get("of") and a.get("of") != run.name:  # another run's image, by its file
            image = run.same_image(self.runs.get(a.get("of")), image)
        if fmt == "json":
            h = run.heatmap(image, **options)
        else:
            h, png = run.heatmap_png(image, style, **options)
        if fmt == "json":
            return _json(
                {
                    "run": run.name,
                    "image": image,
                    "method": a.get("method", "gradcam"),
                    "layer": h.layer,
                    "target": run.class_names[h.target],
                    "score": h.score,
                    "constant": h.constant,
                    "shape": list(h.heatmap.shape),
                    "heatmap": np.round(h.heatmap, 6).tolist(),
                    "box": run.box_info(a["image"]),
                    "quality": run.quality(h, a["image"]),
                    "probabilities": dict(
                        zip(run.class_names, map(float, h.probabilities), strict=True)
                    ),
                }
            )
        headers = {
            "X-Target": run.class_names[h.target],
            "X-Score": f"{h.score:.6g}",
            "Cache-Control": "max-age=600",
        }
        return Response(png, mimetype="image/png", headers=headers)

    def on_upload(self, request):
        run = self.runs.get(request.args.get("run"))
        length = request.content_length
        if length is not None and length > self.max_upload + 1024 * 1024:
            raise TooLarge(
                f"Upload of {length / 2**20:.1f} MB is over the limit of "
                f"{self.max_upload / 2**20:.0f} MB"
            )
        f = request.files.get("file")
        if f is None:
            raise UserError("No file in the upload: send multipart/form-data with a 'file' field")
        data = f.read(self.max_upload + 1)
        return _json(run.upload(data, f.filename or "upload", limit=self.max_upload))


class _Forbidden(UserError):
    pass


def _required(args, key: str) -> str:
    value = args.get(key)
    if not value:
        raise UserError(f"Missing parameter '{key}'")
    return value


def _number(args, key: str, default: float) -> float:
    value = args.get(key)
    if value is None or value == "":
        return default
    try:
        out = float(value)
    except ValueError:
        raise UserError(f"Invalid {key} '{value}' (a number)") from None
    if not np.isfinite(out):
        raise UserError(f"Invalid {key} '{value}' (a number)")
    return out


def _json(obj, status: int = 200) -> Response:
    return Response(as_json(obj), status=status, mimetype="application/json")


def _error(message: str, status: int) -> Response:
    return Response(json.dumps({"error": message}), status=status, mimetype="application/json")

"""The explorer inside TensorBoard: a dynamic plugin (entry point ``tensorboard_plugins``), so
``tensorboard --logdir runs/`` shows a "tfcam" tab when tfcam is installed.

TensorBoard serves a plugin's routes under ``/data/plugin/tfcam/``; one catch-all route hands
every request under ``/data/plugin/tfcam/app/`` to the same :class:`~tfcam.serve.app.Explorer`
that ``tfcam serve`` runs, with the prefix moved from the path into ``SCRIPT_NAME`` (the
explorer's pages use relative URLs). The
frontend entry, ``index.js``, only sends TensorBoard's plugin frame to the explorer's page.

The runs are those under ``--logdir``: a run, a folder of runs or a sweep (or a run's own
``tensorboard`` folder). They are found when TensorBoard first asks whether the plugin is active,
and nothing imports TensorFlow until a heatmap is asked for.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from tensorboard.plugins import base_plugin

from tfcam.errors import UserError

PLUGIN = "tfcam"
#: Where the explorer is mounted: TensorBoard routes ``/data/plugin/tfcam/…`` here, but drops a
#: trailing slash when matching, so the page lives one level down (``…/tfcam/app/``).
PREFIX = f"/data/plugin/{PLUGIN}/app"

#: The frontend module TensorBoard imports in the plugin's frame: it loads the explorer there.
INDEX_JS = b"""// tfcam's TensorBoard tab: the explorer page, served by the same plugin.
export async function render() {
  window.location.replace(new URL("./app/", import.meta.url).href);
}
"""


def runs_under(logdir: str | Path) -> list[Path]:
    """The finished runs TensorBoard's ``--logdir`` holds (empty when none)."""
    from tfcam.serve.paths import find_runs

    root = Path(logdir).expanduser()
    for candidate in (root, root.parent if root.name == "tensorboard" else None):
        if candidate is None:
            continue
        try:
            return find_runs(candidate)
        except UserError:
            continue
    return []


class TfcamPlugin(base_plugin.TBPlugin):
    """The "tfcam" tab."""

    plugin_name = PLUGIN

    def __init__(self, context):
        self._logdir = context.logdir or ""
        self._app = None
        self._lock = threading.Lock()

    def _explorer(self):
        with self._lock:
            if self._app is None:
                from tfcam.serve.app import Explorer
                from tfcam.serve.runs import RunSet

                paths = runs_under(self._logdir)
                if not paths:
                    raise UserError(f"No finished tfcam run under '{self._logdir}'")
                self._app = Explorer(RunSet(paths))
            return self._app

    def is_active(self) -> bool:
        return bool(self._logdir) and bool(runs_under(self._logdir))

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(
            es_module_path="/index.js", tab_name="tfcam", disable_reload=True
        )

    def get_plugin_apps(self):
        return {"/index.js": self._index_js, "/*": self._serve}

    def _index_js(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/javascript"),
                                  ("Content-Length", str(len(INDEX_JS)))])  # fmt: skip
        return [INDEX_JS]

    def _serve(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if not path.startswith(PREFIX + "/"):
            # ``…/tfcam/app`` (the page's relative URLs need the slash) or anything else
            start_response(
                "302 FOUND", [("Location", environ.get("SCRIPT_NAME", "") + PREFIX + "/")]
            )
            return [b""]
        environ = dict(environ)
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + PREFIX
        environ["PATH_INFO"] = path[len(PREFIX) :]
        try:
            app = self._explorer()
        except UserError as e:
            body = json.dumps({"error": str(e)}).encode()
            start_response("404 NOT FOUND", [("Content-Type", "application/json")])
            return [body]
        return app(environ, start_response)

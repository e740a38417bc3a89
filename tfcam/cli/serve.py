"""``tfcam serve``: the interactive explorer of a run, a sweep or a folder of runs."""

from __future__ import annotations

import logging
import secrets
import socket

import click

from tfcam.cli.group import cli
from tfcam.errors import UserError

log = logging.getLogger("tfcam")

#: Hosts that only this machine reaches: no token needed.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@cli.command()
@click.argument("path", metavar="PATH")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; any other than the loopback requires a token.",
)
@click.option(
    "--port",
    default=6070,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free one).",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the explorer in the browser.")
@click.option(
    "--token",
    help="Token required in the URL (default: none on the loopback, a random one elsewhere).",
)
@click.option(
    "--max-upload-mb",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0.1, 1024),
    help="Largest image a user may upload.",
)
def serve(path, host, port, open_browser, token, max_upload_mb) -> None:
    """Explore PATH (a run, a sweep or a folder of runs) in the browser: the gallery of its
    images, heatmaps of every method, layer and class on demand, your own photos."""  # fmt: skip
    from tfcam.cli.stderr import quiet_tensorflow
    from tfcam.serve.app import Explorer
    from tfcam.serve.runs import RunSet

    quiet_tensorflow()
    runs = RunSet.at(path)
    if host not in LOOPBACK and not token:
        token = secrets.token_urlsafe(16)
    if host not in LOOPBACK:
        log.warning(
            "Listening on %s: anyone who can reach this machine can use the explorer with its "
            "token. Keep the token to yourself, or use --host 127.0.0.1", host
        )  # fmt: skip
    app = Explorer(runs, token=token, max_upload=int(max_upload_mb * 2**20))
    next(iter(runs.runs.values())).warm()  # TensorFlow's import, before the first page asks
    server = _server(host, port, app)
    shown = f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{server.server_port}/" + (f"?token={token}" if token else "")
    names = ", ".join(runs.runs)
    click.echo(f"tfcam explorer: {address}  ({len(runs.runs)} run(s): {names}; Ctrl-C stops it)")
    if open_browser:
        import webbrowser

        webbrowser.open(address)
    try:
        server.serve_forever()  # werkzeug's returns on Ctrl-C
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        runs.close()
    click.echo("tfcam explorer stopped")


def _server(host: str, port: int, app):
    """werkzeug's threaded server on ``host:port``, or one line (exit 2) when it cannot listen."""
    from werkzeug.serving import make_server

    _check_port(host, port)
    try:
        return make_server(host, port, app, threaded=True, request_handler=_handler())
    except (OSError, SystemExit) as e:  # werkzeug exits by itself when the port is taken
        raise _cannot_listen(host, port, getattr(e, "strerror", None) or "address in use") from None


def _cannot_listen(host: str, port: int, reason: str) -> UserError:
    return UserError(
        f"Cannot listen on {host}:{port} ({reason}). Choose another --port (0 picks a free one) "
        "or --host"
    )


def _check_port(host: str, port: int) -> None:
    """One line (exit 2) when the port is taken, before werkzeug prints its own paragraph."""
    if not port:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise _cannot_listen(host, port, e.strerror or str(e)) from None


def _handler():
    from werkzeug.serving import WSGIRequestHandler

    class Quiet(WSGIRequestHandler):
        """No line per request on the terminal (errors are still logged)."""

        def log_request(self, code="-", size="-") -> None:
            pass

    return Quiet

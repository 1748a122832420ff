"""A small HTTP predict service: POST an image, get its labels (Starlette app served by uvicorn).

Endpoints::

    GET  /health                     {"status": "ok"}
    GET  /models                     the loaded models: name, dims, channels, classes, patch
    POST /predict?model=NAME         body: an image file (TIFF, PNG, JPEG or .npy);
         [&output=labels|probabilities] [&format=npy|tif]
                                     answer: labels (uint8) or probabilities (float32) as .npy
                                     (default) or TIFF

The image is predicted in memory with the same tiles and Gaussian blending as
``mdlma infer`` (:func:`~unified_framework.inference.engine.predict_array`), so the
service is for the ad hoc regions the dashboard's pages send; whole slides go through
``mdlma infer``. It listens on loopback by default; bound to any other interface it
requires a token (``Authorization: Bearer TOKEN``), and every request without it is
answered 401.

A running service announces itself in a state file (``<home>/services/serve-PORT.json``,
mode 0600: it holds the token): its URL, token, models and process id. The dashboard's
pages read these files (:func:`running_services`) to call the service; the file is
removed when the service stops.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MDLMAError
from .model import SegmentationModel

logger = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: Largest request body (bytes): ad hoc regions, not whole slides.
MAX_BODY = 256 * 2**20


def check_binding(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without an access token.

    Examples
    --------
    >>> check_binding("127.0.0.1", None)
    >>> check_binding("0.0.0.0", None)
    Traceback (most recent call last):
    ...
    unified_framework.errors.InputError: --host 0.0.0.0: listening beyond loopback needs an access token (--token or MDLMA_SERVE_TOKEN)
    """
    if host not in LOOPBACK and not token:
        raise InputError(
            f"--host {host}: listening beyond loopback needs an access token (--token or MDLMA_SERVE_TOKEN)"
        )


def _suffix(data: bytes) -> str:
    if data[:6] == b"\x93NUMPY":
        return ".npy"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return ".tif"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    raise InputError("request body: not a TIFF, PNG, JPEG or .npy image")


def decode_image(data: bytes, model: SegmentationModel) -> np.ndarray:
    """A request body as float32 ``(channels, *spatial)`` for ``model``."""
    suffix = _suffix(data)
    if suffix == ".npy":
        array = np.load(io.BytesIO(data), allow_pickle=False)
        colour = array.ndim == model.spatial_dims + 1 and array.shape[-1] == model.in_channels > 1
    else:
        from ..io import read_volume

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"request{suffix}"
            path.write_bytes(data)
            volume = read_volume(path)
            array, colour = np.asarray(volume.data), "c" in (volume.axes or "")
    array = np.asarray(array, dtype=np.float32)
    array = np.moveaxis(array, -1, 0) if colour else array[None]
    return array


def encode(array: np.ndarray, fmt: str) -> tuple[bytes, str]:
    """An answer array as ``.npy`` or TIFF bytes and its media type."""
    buffer = io.BytesIO()
    if fmt == "tif":
        import tifffile

        tifffile.imwrite(buffer, array)
        return buffer.getvalue(), "image/tiff"
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue(), "application/octet-stream"


def create_app(
    models: Mapping[str, SegmentationModel], token: str | None = None, overlap: float = 0.5
) -> Any:
    """The Starlette application serving ``models`` (name -> model).

    Examples
    --------
    >>> from starlette.testclient import TestClient                      # doctest: +SKIP
    >>> client = TestClient(create_app({"sun": load_model("m.pt")}))     # doctest: +SKIP
    >>> client.post("/predict?model=sun", content=open("img.tif", "rb").read())  # doctest: +SKIP
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from .engine import predict_array

    def denied(request: Request) -> Response | None:
        if token is None:
            return None
        given = request.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return JSONResponse({"error": "missing or wrong access token"}, status_code=401)

    async def health(request: Request) -> Response:
        return denied(request) or JSONResponse({"status": "ok"})

    async def list_models(request: Request) -> Response:
        return denied(request) or JSONResponse(
            {
                name: {
                    "spatial_dims": m.spatial_dims,
                    "in_channels": m.in_channels,
                    "num_classes": m.num_classes,
                    "patch_size": list(m.patch_size),
                    "class_names": list(getattr(m, "class_names", []) or []),
                }
                for name, m in models.items()
            }
        )

    async def predict(request: Request) -> Response:
        refused = denied(request)
        if refused:
            return refused
        name = request.query_params.get("model") or (next(iter(models)) if len(models) == 1 else "")
        if name not in models:
            return JSONResponse(
                {"error": f"model {name!r}: expected one of {', '.join(models)} (?model=NAME)"},
                status_code=400,
            )
        output = request.query_params.get("output", "labels")
        fmt = request.query_params.get("format", "npy")
        if output not in ("labels", "probabilities") or fmt not in ("npy", "tif"):
            return JSONResponse(
                {"error": "output must be labels|probabilities, format npy|tif"}, status_code=400
            )
        length = int(request.headers.get("content-length") or 0)
        if length > MAX_BODY:
            return JSONResponse(
                {"error": f"image of {length} bytes; at most {MAX_BODY} (use mdlma infer)"},
                status_code=413,
            )
        data = await request.body()
        model = models[name]
        try:
            image = decode_image(data, model)
            patch = tuple(
                min(p, s - s % d) or d
                for p, s, d in zip(model.patch_size, image.shape[1:], model.divisor)
            )
            from starlette.concurrency import run_in_threadpool

            probs = await run_in_threadpool(
                predict_array, model, image, patch=patch, overlap=overlap
            )
        except MDLMAError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        answer = probs.argmax(0).astype(np.uint8) if output == "labels" else probs
        body, media = encode(answer, fmt)
        return Response(
            body, media_type=media, headers={"X-Shape": ",".join(map(str, answer.shape))}
        )

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/models", list_models),
            Route("/predict", predict, methods=["POST"]),
        ]
    )


def request_prediction(
    url: str,
    image: np.ndarray,
    model: str | None = None,
    token: str | None = None,
    output: str = "labels",
    timeout: float = 300.0,
) -> np.ndarray:
    """Ask a running service for the labels (or probabilities) of ``image``: what pages call.

    Parameters
    ----------
    url : str
        The service, e.g. ``http://127.0.0.1:8765``.
    image : numpy.ndarray
        ``(y, x)``, ``(y, x, c)`` or ``(z, y, x)``.
    model : str, optional
        Model name (needed when the service holds several).
    token : str, optional
        Access token of a service beyond loopback.
    output : str
        ``labels`` or ``probabilities``.

    Raises
    ------
    InputError
        The service refused the request (its one-line reason) or cannot be reached.

    Examples
    --------
    >>> labels = request_prediction("http://127.0.0.1:8765", region, model="sun")  # doctest: +SKIP
    """
    import json
    import urllib.error
    import urllib.parse
    import urllib.request

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(image), allow_pickle=False)
    query = urllib.parse.urlencode({k: v for k, v in (("model", model), ("output", output)) if v})
    headers = {"Content-Type": "application/octet-stream"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{url.rstrip('/')}/predict?{query}", data=buffer.getvalue(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) URL given by the user)
            return np.load(io.BytesIO(response.read()), allow_pickle=False)
    except urllib.error.HTTPError as exc:
        try:
            reason = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            reason = exc.reason
        raise InputError(f"predict service {url}: {reason} (HTTP {exc.code})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise InputError(
            f"predict service {url}: not reachable ({getattr(exc, 'reason', exc)})"
        ) from None


def services_dir(home: str | Path | None = None) -> Path:
    """Folder of the running services' state files: ``<home>/services``.

    Examples
    --------
    >>> services_dir("/data/me")
    PosixPath('/data/me/services')
    """
    if home is None:
        from ..config import load_config

        home = load_config()["home"]
    return Path(home) / "services"


def state_path(port: int, home: str | Path | None = None) -> Path:
    """Default state file of the service on ``port``.

    Examples
    --------
    >>> state_path(8765, "/data/me")
    PosixPath('/data/me/services/serve-8765.json')
    """
    return services_dir(home) / f"serve-{int(port)}.json"


def service_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a service bound to ``host``.

    Examples
    --------
    >>> service_url("0.0.0.0", 8765), service_url("::1", 80)
    ('http://127.0.0.1:8765', 'http://[::1]:80')
    """
    if host in ("0.0.0.0", "", "localhost"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_state(
    path: str | Path,
    host: str,
    port: int,
    token: str | None,
    models: Mapping[str, Any],
    sources: Mapping[str, str] | None = None,
) -> Path:
    """Write a service's state file atomically, readable by its owner only (it holds the token).

    Examples
    --------
    >>> import tempfile
    >>> p = write_state(Path(tempfile.mkdtemp()) / "s.json", "127.0.0.1", 8765, None, {"sun": None})
    >>> json.loads(p.read_text())["url"], oct(p.stat().st_mode & 0o777)
    ('http://127.0.0.1:8765', '0o600')
    """
    from ..utils.atomic import atomic_path

    path = Path(path)
    state = {
        "url": service_url(host, port),
        "host": host,
        "port": int(port),
        "token": token or "",
        "models": list(models),
        "sources": dict(sources or {}),
        "pid": os.getpid(),
        "started": time.time(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(state, handle)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process reuses the id
        return False
    return True


def running_services(home: str | Path | None = None) -> list[dict[str, Any]]:
    """The services whose state files are in :func:`services_dir` and whose process lives.

    Each entry is the state file's content plus ``state`` (its path). Files of services
    that died without removing them are skipped (and left for :func:`stop_service`).

    Examples
    --------
    >>> running_services("/nonexistent")
    []
    """
    found = []
    folder = services_dir(home)
    for path in sorted(folder.glob("serve-*.json")) if folder.is_dir() else []:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            pid = int(state["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _alive(pid):
            found.append({**state, "state": str(path)})
    return found


def start_service(
    models: list[str | Path],
    port: int,
    home: str | Path | None = None,
    dims: int = 2,
    log: str | Path | None = None,
) -> subprocess.Popen:
    """Start ``mdlma serve`` on loopback in the background (what the dashboard's button does).

    The service writes its state file once its models are loaded; wait for it with
    :func:`wait_for_service`.

    Examples
    --------
    >>> process = start_service(["model.pt"], 8765)      # doctest: +SKIP
    >>> state = wait_for_service(8765, process)          # doctest: +SKIP
    """
    state = state_path(port, home)
    argv = [sys.executable, "-m", "unified_framework", "serve", *map(str, models)]
    argv += ["--port", str(int(port)), "--dims", str(int(dims)), "--state", str(state)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if not log:
        return subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            argv, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def wait_for_service(
    port: int,
    process: subprocess.Popen | None = None,
    home: str | Path | None = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Wait until the service on ``port`` has written its state and answers ``/health``.

    Raises
    ------
    InputError
        The process ended first (with its exit status) or the time ran out.
    """
    import urllib.request

    path = state_path(port, home)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise InputError(
                f"mdlma serve on port {port} ended with status {process.returncode} before answering"
            )
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            headers = {"Authorization": f"Bearer {state['token']}"} if state.get("token") else {}
            request = urllib.request.Request(f"{state['url']}/health", headers=headers)
            with urllib.request.urlopen(request, timeout=2):  # noqa: S310 (loopback URL we wrote)
                return {**state, "state": str(path)}
        except (OSError, ValueError, KeyError):
            time.sleep(0.2)
    raise InputError(f"mdlma serve on port {port}: no answer within {timeout:.0f} s")


def stop_service(state: Mapping[str, Any], timeout: float = 10.0) -> None:
    """Stop the service of a state entry (SIGTERM to its process id) and remove its state file."""
    pid = int(state["pid"])
    if _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            try:  # our own child: reap it, else it stays a zombie that looks alive
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                pass
            time.sleep(0.1)
    Path(state["state"]).unlink(missing_ok=True)


def serve(
    models: Mapping[str, SegmentationModel],
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    state: str | Path | None = None,
    sources: Mapping[str, str] | None = None,
) -> None:
    """Run the service until interrupted (uvicorn); ``state`` is written once it listens and removed at exit."""
    import uvicorn

    check_binding(host, token)
    written: list[Path] = []

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            # Announced only once the port is bound (a second service on a busy port
            # exits in startup and must not touch the first one's state file).
            if self.started and state is not None:
                written.append(write_state(state, host, port, token, models, sources))

    server = Server(
        uvicorn.Config(create_app(models, token), host=host, port=port, log_level="warning")
    )
    try:
        server.run()
    finally:
        for path in written:
            path.unlink(missing_ok=True)

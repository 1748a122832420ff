"""``mdlma serve``: an HTTP predict service for ad hoc predictions (loopback by default).

Examples
--------
``mdlma serve model.pt``  then  ``curl --data-binary @region.tif 'http://127.0.0.1:8765/predict' -o labels.npy``
``mdlma serve a.pt b/ --host 0.0.0.0 --token $SECRET``  (beyond loopback only with a token)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="HTTP predict service: POST an image, get labels (loopback; a token beyond it)",
        description=(
            "Serve one or more models over HTTP: GET /health, GET /models, POST /predict?model=NAME with an "
            "image (TIFF, PNG, JPEG, .npy) answers labels (.npy or TIFF). Listens on 127.0.0.1 unless --host is "
            "given, which needs --token (or MDLMA_SERVE_TOKEN). See docs/inference.md."
        ),
    )
    p.add_argument(
        "models",
        type=Path,
        nargs="+",
        metavar="MODEL",
        help="any model mdlma infer takes (SUN/HRNet .pt, nnU-Net folder, .keras, bioimage.io)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1, loopback)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument(
        "--token", help="access token (default $MDLMA_SERVE_TOKEN); required beyond loopback"
    )
    p.add_argument(
        "--dims", type=int, choices=(2, 3), default=2, help="spatial dims of requests (default 2)"
    )
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument(
        "--state",
        type=Path,
        help="state file with URL, token and process id, read by the dashboard's pages "
        "(default MDLMA_HOME/services/serve-PORT.json; removed when the service stops)",
    )
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..inference.model import load_model
    from ..inference.service import check_binding, serve, state_path

    token = args.token or os.environ.get("MDLMA_SERVE_TOKEN") or None
    check_binding(args.host, token)  # before loading models
    models, sources = {}, {}
    for path in args.models:
        name = path.name.split(".")[0] or path.name
        if name in models:
            raise InputError(f"{path}: a second model named {name!r}; rename one of the files")
        models[name] = load_model(path, spatial_dims=args.dims, device=args.device)
        sources[name] = str(path.absolute())
    state = args.state or state_path(args.port)
    print(
        f"serving {', '.join(models)} on http://{args.host}:{args.port} (POST /predict?model=NAME); Ctrl-C stops; state in {state}"
    )
    serve(models, args.host, args.port, token, state=state, sources=sources)
    return 0

"""The predict service answers on loopback, refuses without a token, reports bad input."""

from __future__ import annotations

import io
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest
import tifffile
from starlette.testclient import TestClient
from test_inference import grey_image, tiny_sun

from unified_framework.cli.main import main
from unified_framework.errors import InputError
from unified_framework.inference import load_model, predict_array
from unified_framework.inference.service import create_app, request_prediction


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(tiny_sun(tmp_path_factory.mktemp("serve")))


def test_service_answers_a_request_on_loopback(model, tmp_path):
    import uvicorn

    image = tifffile.imread(grey_image(tmp_path, (40, 48)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app({"sun": model}), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(100):
            if server.started:
                break
            time.sleep(0.05)
        body = io.BytesIO()
        tifffile.imwrite(body, image)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict?model=sun", data=body.getvalue()
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            labels = np.load(io.BytesIO(response.read()))
        # what the dashboard's pages call
        again = request_prediction(f"http://127.0.0.1:{port}", image, model="sun")
        with pytest.raises(InputError, match="model 'nope'"):
            request_prediction(f"http://127.0.0.1:{port}", image, model="nope")
    finally:
        server.should_exit = True
        thread.join(10)
    expected = predict_array(model, image[None].astype(np.float32), patch=(16, 16)).argmax(0)
    assert labels.dtype == np.uint8 and np.array_equal(labels, expected)
    assert np.array_equal(again, expected)


def test_token_and_bad_requests(model):
    client = TestClient(create_app({"sun": model}, token="s3cret"))
    assert client.get("/health").status_code == 401
    headers = {"Authorization": "Bearer s3cret"}
    assert client.get("/health", headers=headers).json() == {"status": "ok"}
    assert client.get("/models", headers=headers).json()["sun"]["num_classes"] == 3
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((16, 16, 3), np.float32))  # colour for a grey 2D model
    wrong = client.post("/predict", content=buffer.getvalue(), headers=headers)
    assert wrong.status_code == 400 and "3D" in wrong.json()["error"]
    junk = client.post("/predict", content=b"hello", headers=headers)
    assert junk.status_code == 400 and "not a TIFF" in junk.json()["error"]
    np.save(buffer := io.BytesIO(), np.zeros((32, 32), np.float32))
    ok = client.post("/predict?output=probabilities", content=buffer.getvalue(), headers=headers)
    assert ok.status_code == 200 and np.load(io.BytesIO(ok.content)).shape == (3, 32, 32)


def test_serve_refuses_other_interfaces_without_token(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MDLMA_SERVE_TOKEN", raising=False)
    assert main(["serve", str(tmp_path / "m.pt"), "--host", "0.0.0.0"]) != 0
    assert "needs an access token" in capsys.readouterr().err

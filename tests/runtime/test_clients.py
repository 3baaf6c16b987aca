"""Clients beyond Python: the Node.js script (examples/node, onnxruntime-node) and the
browser page (examples/web, onnxruntime-web in headless Chromium) read an export's manifest
and give the Python runtime's numbers on the same inputs. Each runs where its tools are
(node and npm; Chromium and the playwright package) and says why it skips elsewhere."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pytest

import mtl_deploy
from mtl_deploy.meta.train import meta_train_and_save
from mtl_deploy.runtime import FewShotAdapter
from mtl_deploy.runtime.files import predict_file, task_columns
from tests.meta.test_adapt_and_export import brief_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOLERANCE = 1e-5  # one float32 graph in two builds of ONNX Runtime
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAS_NPM = bool(shutil.which("node") and shutil.which("npm"))
needs_node = pytest.mark.skipif(not HAS_NPM, reason="node and npm are not on PATH (apt-get install nodejs npm)")
needs_browser = pytest.mark.skipif(not (HAS_NPM and CHROMIUM), reason="needs node, npm and Chromium (apt-get install chromium)")


def node_modules(example: str) -> Path:
    """The example's npm packages, installed by `npm ci` once into a cache keyed by its lock
    file and reused by later runs. `--ignore-scripts`: onnxruntime-node's install script only
    downloads GPU libraries; its CPU build ships in the package."""
    source = EXAMPLES / example
    key = hashlib.sha256((source / "package-lock.json").read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mtl_deploy" / "npm" / f"{example}-{key}"
    if not cache.is_dir():
        staging = cache.with_name(f"{cache.name}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(source / name, staging)
        result = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=staging,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"npm ci for examples/{example} failed: {result.stderr[-2000:]}"
        try:
            staging.rename(cache)
        except OSError:  # another run installed it first
            shutil.rmtree(staging)
    return cache / "node_modules"


@pytest.fixture(scope="module")
def clients(tmp_path_factory) -> Path:
    """The two examples as a user has them after `npm ci` (the packages from the cache)."""
    root = tmp_path_factory.mktemp("clients")
    for example in ("node", "web"):
        shutil.copytree(EXAMPLES / example, root / example, ignore=shutil.ignore_patterns("node_modules"))
        (root / example / "node_modules").symlink_to(node_modules(example), target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> dict[str, Path]:
    """Adapter exports of a metric learner (any number of ways), of ANIL (ways fixed by the
    graph) and of MAML on sinusoid regression."""
    root = tmp_path_factory.mktemp("adapters")
    for algorithm in ("protonet", "anil", "maml"):
        meta_train_and_save(brief_config(algorithm), root / f"{algorithm}-ckpt", progress=False)
        mtl_deploy.export(root / f"{algorithm}-ckpt", root / algorithm, format="adapter")
    return {algorithm: root / algorithm for algorithm in ("protonet", "anil", "maml")}


def episode(algorithm: str) -> dict[str, list]:
    """Support and query rows: unseen digits (5, 6, 7; pixels 0..16) for the classifiers, a
    sine wave for MAML."""
    if algorithm == "maml":
        x = np.random.default_rng(0).uniform(-5, 5, size=(17, 1))
        return {"support_x": x[:10].tolist(), "support_y": (2 * np.sin(x[:10] - 0.5)).tolist(), "query_x": x[10:].tolist()}
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [digits.images[digits.target == digit][:, None] for digit in (5, 6, 7)]  # (n, 1, 8, 8) each
    return {"support_x": np.concatenate([i[:3] for i in images]).tolist(), "support_y": [c for c in range(3) for _ in range(3)],
            "query_x": np.concatenate([i[3:5] for i in images]).tolist()}


def python_table(adapter_dir: Path, case: dict, logits: bool) -> dict[str, np.ndarray]:
    adapter = FewShotAdapter(adapter_dir)
    values = adapter.adapt(case["support_x"], case["support_y"]).predict(case["query_x"])
    return task_columns(adapter.task["name"], values, adapter.task["kind"], logits)


def largest_difference(rows: list[dict] | dict[str, list], want: dict[str, np.ndarray]) -> float:
    """The largest difference between a client's columns (rows of objects or columns of
    lists) and the Python runtime's; the same columns in the same order, or an assertion."""
    got = rows if isinstance(rows, dict) else {name: [row[name] for row in rows] for name in rows[0]}
    assert list(got) == list(want)
    return max(float(np.max(np.abs(np.asarray(got[name], dtype=np.float64) - want[name]))) for name in want)


def node(clients: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["node", str(clients / "node" / "predict.mjs"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def node_rows(clients: Path, *args) -> list[dict]:
    result = node(clients, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_node
def test_node_predicts_every_task_like_python(clients, export_dir, tmp_path):
    rows = np.random.default_rng(1).normal(size=(9, 50))
    (tmp_path / "rows.json").write_text(json.dumps(rows.tolist()))
    np.savetxt(tmp_path / "rows.csv", rows, delimiter=",", header=",".join(f"f{j}" for j in range(50)), comments="")
    for logits in (False, True):
        want = predict_file(export_dir, tmp_path / "rows.csv", logits=logits)
        for source in ("rows.json", "rows.csv"):
            got = node_rows(clients, export_dir, "--input", tmp_path / source, *["--logits"] * logits)
            assert largest_difference(got, want) <= TOLERANCE, (source, logits)
    segment = node_rows(clients, export_dir, "--input", tmp_path / "rows.json", "--task", "segment")
    assert list(segment[0]) == ["segment", "segment_probability"]


@needs_node
@pytest.mark.parametrize("algorithm", ["protonet", "anil", "maml"])
def test_node_adapts_like_python(clients, adapters, algorithm, tmp_path):
    case = episode(algorithm)
    (tmp_path / "support.json").write_text(json.dumps({"x": case["support_x"], "y": case["support_y"]}))
    (tmp_path / "query.json").write_text(json.dumps(case["query_x"]))
    for logits in (False, True):
        got = node_rows(clients, adapters[algorithm], "--support", tmp_path / "support.json",
                        "--input", tmp_path / "query.json", *["--logits"] * logits)
        assert largest_difference(got, python_table(adapters[algorithm], case, logits)) <= TOLERANCE, logits


@needs_node
def test_node_refuses_bad_input_in_one_line(clients, export_dir, adapters, tmp_path):
    (tmp_path / "narrow.json").write_text(json.dumps([[0.0] * 7]))
    (tmp_path / "query.json").write_text(json.dumps(episode("protonet")["query_x"]))
    (tmp_path / "gap.json").write_text(json.dumps({"x": episode("protonet")["support_x"][:4], "y": [0, 0, 2, 2]}))
    cases = [((export_dir, "--input", tmp_path / "narrow.json"), "inputs have rows of shape [7]; this model takes [50]"),
             ((export_dir, "--input", tmp_path / "missing.csv"), "does not exist"),
             ((adapters["anil"], "--input", tmp_path / "query.json"), "an adapter export adapts first"),
             ((adapters["anil"], "--support", tmp_path / "gap.json", "--input", tmp_path / "query.json"),
              "class(es) 1 have no support row"),
             ((tmp_path, "--input", tmp_path / "query.json"), "has no manifest.json")]
    for args, message in cases:
        result = node(clients, *args)
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def browser(clients, adapters):
    """A headless Chromium page on the web example, served on localhost with the adapter
    exports under models/; any request that would leave localhost is refused and recorded."""
    playwright_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package (pip install playwright)")
    site = clients / "web"
    (site / "models").mkdir()
    for algorithm, path in adapters.items():
        (site / "models" / algorithm).symlink_to(path, target_is_directory=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen = SimpleNamespace(base=f"http://127.0.0.1:{server.server_address[1]}", outside=[], failures=[])

    def local_only(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            return route.continue_()
        seen.outside.append(route.request.url)
        return route.abort()

    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM)
        seen.page = chromium.new_page(viewport={"width": 1000, "height": 900})
        seen.page.on("pageerror", lambda error: seen.failures.append(str(error)))
        seen.page.route("**/*", local_only)
        yield seen
        chromium.close()
    server.shutdown()


@needs_browser
@pytest.mark.parametrize("algorithm", ["protonet", "anil"])
def test_page_adapts_like_python(browser, adapters, algorithm, tmp_path):
    page = browser.page
    page.goto(f"{browser.base}/index.html?export=models/{algorithm}/&scale=16")
    assert page.evaluate("mtlDeploy.loading") == {"algorithm": algorithm, "rowShape": [1, 8, 8],
                                                  "ways": None if algorithm == "protonet" else 3}
    case = episode(algorithm)
    page.evaluate("([x, y]) => mtlDeploy.adapt(x, y)", [case["support_x"], case["support_y"]])
    got = page.evaluate("query => mtlDeploy.predict(query)", case["query_x"])
    raw = {f"class_{j}": np.asarray(got["values"]).reshape(got["shape"])[:, j] for j in range(3)}
    assert largest_difference(raw, python_table(adapters[algorithm], case, logits=True)) <= TOLERANCE
    assert largest_difference(got["columns"], python_table(adapters[algorithm], case, logits=False)) <= TOLERANCE
    assert page.text_content("#adapt-status").startswith("Adapted on 9 images of 3 classes")
    assert page.locator("#results li").count() == 6 and page.locator("#classes .thumb").count() == 9
    page.screenshot(path=tmp_path / "page.png", full_page=True)
    assert browser.outside == [] and browser.failures == []


@needs_browser
def test_page_adapts_on_drawings_and_picked_files(browser, adapters, tmp_path):
    """The controls as a person uses them: pick the export's files, draw a stroke per class
    and add it, pick an image file, adapt, draw a query and classify it."""
    from PIL import Image

    page = browser.page
    page.goto(f"{browser.base}/index.html?scale=16")
    page.set_input_files("#export-files", [adapters["anil"] / "manifest.json", adapters["anil"] / "adapter.onnx"])
    page.wait_for_function("document.querySelector('#model-status').textContent.startsWith('Loaded manifest.json: anil')")
    for label, card in enumerate(page.locator("#classes .card").all()):
        box = card.locator(".pad").bounding_box()
        page.mouse.move(box["x"] + 30, box["y"] + 20 + 30 * label)
        page.mouse.down()
        page.mouse.move(box["x"] + 110, box["y"] + 120 - 30 * label, steps=8)
        page.mouse.up()
        card.locator(".add").click()
    Image.new("L", (32, 32), 255).save(tmp_path / "blank.png")
    page.locator("#classes .card").first.locator("input[type=file]").set_input_files(tmp_path / "blank.png")
    page.wait_for_function("document.querySelectorAll('#classes .thumb').length === 4")
    page.click("#adapt")
    assert page.text_content("#adapt-status").startswith("Adapted on 4 images of 3 classes")
    box = page.locator("#query-card .pad").bounding_box()
    page.mouse.move(box["x"] + 30, box["y"] + 20)
    page.mouse.down()
    page.mouse.move(box["x"] + 110, box["y"] + 120, steps=8)
    page.mouse.up()
    page.click("#classify")
    assert page.locator("#results li").count() == 1
    assert page.text_content("#results li").startswith("class ")
    page.screenshot(path=tmp_path / "drawn.png", full_page=True)
    assert browser.outside == [] and browser.failures == []

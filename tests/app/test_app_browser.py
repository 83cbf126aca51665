"""End to end in a real browser: `python -m hf_pept.app` in a subprocess, headless Chromium (the Debian package)
driven by Playwright: Launch disabled while a field has an error, a refused launch's message gone once fixed, set a
tiny config, launch a run, see the loss chart get points, stop the run (a checkpoint is saved), and see that a
reloaded page re-attaches to the run list.

Needs Chromium, gradio and playwright: `bash scripts/install_browser.sh .venv/bin/python` installs them (CI does).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL = "run `bash scripts/install_browser.sh .venv/bin/python` (apt chromium + pip gradio playwright)"
TINY_CONFIG = {  # field -> value typed into the form: a tiny model on a small local corpus, a record every step
    "model": "tiny",
    "vocab_size": "512",
    "max_steps": "400",
    "seq_len": "64",
    "batch_size": "2",
    "logging_steps": "1",
    "eval_steps": "0",
    "save_steps": "0",
    "max_eval_tokens": "1024",
    "rank": "16",
}
WORDS = "the model learns low rank updates while the optimizer keeps its state small and the loss goes down".split()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _missing_tools() -> list[str]:
    missing = [m for m in ("gradio", "playwright", "matplotlib") if importlib.util.find_spec(m) is None]
    if _chromium() is None:
        missing.append("chromium")
    return missing


def _cli_present() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("hf_pept.run_args", "hf_pept.cli"))


pytestmark = [
    pytest.mark.skipif(bool(_missing_tools()), reason=f"browser test needs {_missing_tools()}: {INSTALL}"),
    pytest.mark.skipif(not _cli_present(), reason="browser test needs the `hf-pept train` command (hf_pept.cli)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_url(tmp_path):
    port = _free_port()
    log = open(tmp_path / "app.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hf_pept.app", "--port", str(port), "--runs-dir", str(tmp_path / "runs")],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env={
            **os.environ,
            "GRADIO_ANALYTICS_ENABLED": "False",
            "HF_HUB_OFFLINE": "1",
            "HF_PEPT_CACHE": str(tmp_path / "cache"),  # the run's tokenizer is trained on the small corpus
        },
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
    if proc.poll() is not None:
        log.close()
        pytest.fail("the app did not start:\n" + (tmp_path / "app.log").read_text()[-3000:])
    yield url, tmp_path / "runs"
    from hf_pept.app import runs

    for info in runs.list_runs(tmp_path / "runs"):
        if info.status in ("running", "stopping"):
            runs.stop_run(info.path, grace_seconds=5)
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def _small_corpus(path: Path) -> Path:
    import random

    rng = random.Random(0)
    path.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(120)) for _ in range(300)))
    return path


def _fill(page, name: str, value: str) -> None:
    box = page.locator(f"#field-{name} textarea, #field-{name} input").first
    box.fill(value)
    box.press("Tab")


def _default_method() -> str:
    from hf_pept.app.schema import load_schema

    schema = load_schema()
    return str(next(s.default for s in schema.run.specs if s.name == schema.method_field))


def _loss_points(page) -> int:
    text = page.locator("#points-summary textarea").input_value()
    found = re.findall(r"(\d+) loss points", text)
    return max((int(n) for n in found), default=0)


def test_configure_launch_watch_and_stop_in_the_browser(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, runs_root = app_url
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        command = page.locator("#command")
        expect(command).to_contain_text("hf-pept train", timeout=20_000)
        # the memory estimate at the run's model, and at 1b beside it
        expect(page.locator("#memory-table")).to_contain_text("at tiny (the run's model)")
        expect(page.locator("#memory-table")).to_contain_text("at 1b")

        # A bad value gets the config's own message next to the field, no command, and no Launch button.
        _fill(page, "learning_rate", "fast")
        expect(page.locator("#error-learning_rate")).to_contain_text("must be a number", timeout=10_000)
        expect(page.locator("#launch")).to_be_disabled()
        _fill(page, "learning_rate", "0.001")
        expect(page.locator("#error-learning_rate")).to_be_hidden(timeout=10_000)
        expect(page.locator("#launch")).to_be_enabled()

        # A dataset path that does not exist is named at its field; the small corpus then passes.
        _fill(page, "dataset", str(tmp_path / "missing.txt"))
        expect(page.locator("#error-dataset")).to_contain_text("missing.txt", timeout=10_000)
        _fill(page, "dataset", str(_small_corpus(tmp_path / "corpus.txt")))
        expect(page.locator("#error-dataset")).to_be_hidden(timeout=10_000)

        page.locator("#field-method input").first.click()
        page.get_by_role("option", name="galore", exact=True).click()
        for name, value in TINY_CONFIG.items():
            if page.locator(f"#field-{name}").count():
                _fill(page, name, value)
        expect(command).to_contain_text("--max_steps 400", timeout=10_000)
        if _default_method() != "galore":  # a default is never written on the command line
            expect(command).to_contain_text("--method galore")

        # A refused launch says why until the run name is fixed.
        run_name = page.locator("#run-name textarea, #run-name input").first
        run_name.fill("bad name")
        page.locator("#launch").click()
        expect(page.locator("#launch-message")).to_contain_text("is not valid", timeout=10_000)
        run_name.fill("browser-galore")
        expect(page.locator("#launch-message")).not_to_contain_text("not valid", timeout=10_000)
        page.locator("#launch").click()
        expect(page.locator("#launch-message")).to_contain_text("Launched", timeout=15_000)

        page.get_by_role("tab", name="Runs").click()
        deadline = time.monotonic() + 120  # the run's own start (imports, tokenizer) dominates on a busy machine
        while time.monotonic() < deadline and _loss_points(page) < 3:
            time.sleep(0.5)
        points = _loss_points(page)
        run_dir = runs_root / "browser-galore"
        assert points >= 3, (run_dir / "process.log").read_text()[-3000:] if run_dir.exists() else "no run folder"
        expect(page.locator("#training-chart img")).to_be_visible()

        # Reloading the page re-attaches: the run is listed as running, from its folder alone.
        page.reload()
        page.get_by_role("tab", name="Runs").click()
        expect(page.locator("#run-table")).to_contain_text("browser-galore", timeout=15_000)
        expect(page.locator("#run-table")).to_contain_text("running")

        page.locator("#stop").click()
        expect(page.locator("#run-message")).to_contain_text("stopped", timeout=60_000)
        browser.close()
    assert any(p.name.startswith("checkpoint-") for p in Path(run_dir).iterdir()), "stop saved no checkpoint"

"""The built docs site, opened in headless Chromium: what a reader sees (run by ``nox -s docs`` after the build)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from omni_core.testing import require

SITE = Path(os.environ.get("OMNI_DOCS_SITE", Path(__file__).resolve().parents[2] / "site"))


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    require(found is not None, "chromium is not installed (apt-get install chromium)")
    assert found is not None
    return found


def _dom(page: str) -> str:
    path = SITE / page
    require(path.is_file(), f"{path} is not built (nox -s docs builds it)")
    done = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def index() -> str:
    return _dom("index.html")


def test_the_index_page_has_the_title_and_shows_the_two_commands(index) -> None:
    title = re.search(r"<title>(.*?)</title>", index, re.S)
    assert title is not None and title.group(1).strip() == "Omni Connectors"
    text = re.sub(r"<[^>]+>", "", index)  # code blocks are split into highlighted spans
    assert "python3 -m pip install -q nox &amp;&amp; python3 -m nox -s demo" in text
    assert "python3 -m pip install -q nox &amp;&amp; python3 -m nox -s tests docs" in text


def test_the_navigation_reaches_every_page(index) -> None:
    for label in ("Concepts", "omni-shm", "omni-mooncake", "omni-yuanrong", "omni-coordinator", "omni-pipeline",
                  "omni-ray", "omni-vllm", "Config reference", "The omni command", "Writing a connector",
                  "Multi-host deployment", "API reference"):
        assert re.search(rf">\s*{re.escape(label)}\s*<", index), label


def test_the_config_reference_lists_registered_keys() -> None:
    dom = _dom("config-reference/index.html")
    for connector, key in (("SharedMemoryConnector", "zero_copy"), ("MooncakeStoreConnector", "metadata_server"),
                           ("RayConnector", "ttl_seconds"), ("YuanrongConnector", "port")):
        section = re.search(rf'<h2 id="{connector.lower()}">(.*?)(<h2 |$)', dom, re.S)
        assert section is not None, connector
        keys = re.findall(r"<tr>\s*<td><code>(\w+)</code></td>", section.group(1))
        assert key in keys, (connector, keys)

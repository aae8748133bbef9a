"""Headless Chromium for report tests: load a page offline and count the images that rendered."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

#: appended to a copy of the page: marks how many images decoded (naturalWidth > 0) once it loaded
CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images], bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0));
  const d = document.createElement('div'); d.id = 'figcheck';
  d.textContent = 'figures=' + imgs.length + ' failed=' + bad.length; document.body.appendChild(d);
});</script>"""


def chromium() -> str:
    """The chromium binary, or skip (``make chromium`` installs Debian's package)."""
    exe = shutil.which("chromium") or shutil.which("chromium-headless-shell") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not found: `make chromium` (apt-get install chromium) to run the report rendering test")
    return exe


def rendered_figures(page: Path, tmp: Path) -> tuple[int, int]:
    """``(figures, failed)`` of ``page`` as headless Chromium renders it, network off."""
    exe = chromium()
    probe = tmp / "probe.html"
    probe.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--user-data-dir=" + str(tmp / "chromium-profile"), "--proxy-server=127.0.0.1:9",
                          "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=180)
    m = re.search(r"figures=(\d+) failed=(\d+)", out.stdout)
    assert m, f"chromium gave no result (rc {out.returncode}): {out.stderr[-2000:]}"
    return int(m.group(1)), int(m.group(2))


def assert_offline(html: str) -> None:
    """No external resource: every src/href is a data: URI or an in-page anchor."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html)
    assert all(r.startswith(("data:", "#")) for r in refs), [r[:60] for r in refs if not r.startswith("data:")]
    assert "<link" not in html and "@import" not in html

"""The self-contained HTML report."""

from __future__ import annotations

import base64

import cv2
import numpy as np

from bpnet.report import html_report


def test_report_inlines_images_and_escapes_text(tmp_path):
    image = tmp_path / "000000000042.jpg"
    cv2.imwrite(str(image), np.full((8, 8, 3), 127, np.uint8))
    page = html_report("<Eval>", {"Scores": {"AP": 0.123456, "images": 32}}, [image], notes=["a & b"])
    assert "<h1>&lt;Eval&gt;</h1>" in page and "<p>a &amp; b</p>" in page
    assert "<th>AP</th><td>0.1235</td>" in page and "<th>images</th><td>32</td>" in page
    encoded = page.split("data:image/jpeg;base64,")[1].split("'")[0]
    assert base64.b64decode(encoded) == image.read_bytes()
    assert "000000000042.jpg</figcaption>" in page


def test_report_inlines_charts_as_png(tmp_path):
    chart = tmp_path / "learning_curve.png"
    cv2.imwrite(str(chart), np.full((20, 40, 3), 200, np.uint8))
    page = html_report("Eval", {}, charts={"Learning curve": chart})
    assert "<h2>Learning curve</h2>" in page
    encoded = page.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(encoded) == chart.read_bytes()

"""Self-contained HTML reports: tables of figures, charts and a few annotated images, in one file.

One file with the images inlined (base64 JPEG) is what a viewer like the Kubeflow UI's HTML
artifact pane can show: it cannot follow relative links to sibling files.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _table(rows: Mapping[str, Any]) -> str:
    body = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in rows.items())
    return f"<table>{body}</table>"


def _inline(path: str | Path) -> str:
    """A data URI of a JPEG or PNG file."""
    kind = "png" if Path(path).suffix.lower() == ".png" else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(Path(path).read_bytes()).decode()}"


def html_report(title: str, tables: Mapping[str, Mapping[str, Any]], images: Sequence[str | Path] = (),
                notes: Sequence[str] = (), charts: Mapping[str, str | Path] | None = None) -> str:
    """An HTML page with a heading, one table per entry of ``tables`` (heading -> rows), the
    ``notes`` as paragraphs, ``charts`` (heading -> PNG file, e.g. the training's learning curve)
    and ``images`` (JPEG files) inlined with their file names as captions."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    for heading, rows in tables.items():
        parts.append(f"<h2>{html.escape(heading)}</h2>{_table(rows)}")
    for heading, chart in (charts or {}).items():
        parts.append(f"<h2>{html.escape(heading)}</h2><img class='chart' src='{_inline(chart)}'>")
    if images:
        parts.append("<h2>Annotated images</h2><div class='gallery'>")
        for image in images:
            parts.append(f"<figure><img src='{_inline(image)}'>"
                         f"<figcaption>{html.escape(Path(image).name)}</figcaption></figure>")
        parts.append("</div>")
    style = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
             "th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}"
             ".gallery{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0}img{max-width:320px}img.chart{max-width:none}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n")


def _annotated(results: Path, limit: int) -> list[Path]:
    from bpnet.layout import ANNOTATED_DIR

    return sorted((results / ANNOTATED_DIR).glob("*.jpg"))[:limit]


def evaluation_report(evaluation: Any, label: str, model_dir: Path, images: int) -> str:
    """An evaluation's page (``bpnet.steps.evaluate.Evaluation``): scores, counts, the model's
    learning curve when its folder has one (a trained or retrained model's, bpnet.curves) and
    ``images`` annotated val images."""
    from bpnet.curves import CURVE_PNG

    metrics = evaluation.metrics
    title = f"BodyPoseNet evaluation — {label} model" if label else "BodyPoseNet evaluation"
    tables = {"COCO keypoints (person), val split": evaluation.scores,
              "Counts": {"images": metrics["images"], "detections": metrics["detections"]}}
    curve = model_dir / CURVE_PNG
    charts = {"Learning curve (training)": curve} if curve.is_file() else {}
    return html_report(title, tables, _annotated(evaluation.results_dir, images), charts=charts)


def inference_report(counts: Mapping[str, Any], results: Path, images: int) -> str:
    """An inference run's gallery: the counts and ``images`` annotated images."""
    return html_report("BodyPoseNet inference", {"Detections": counts}, _annotated(results, images))

"""Evaluation outputs: per-case and summary CSVs, box/strip plots, a self-contained HTML report.

Summary statistics are taken over the *finite* values of a metric; the NaN (undefined, e.g. both
masks empty) and inf (one mask empty, for distances) values are counted in their own columns
(``n_nan``, ``n_inf``) so that they are visible, never averaged in or silently dropped.
The report embeds every picture as base64 PNG: one file, viewable offline.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from voxelflow.metrics.evaluate import EvaluationResult
    from voxelflow.metrics.evaluate_io import MetricRow

SUMMARY_COLUMNS = (
    "label",
    "metric",
    "count",
    "n_nan",
    "n_inf",
    "mean",
    "std",
    "median",
    "q1",
    "q3",
)
_NOT_PLOTTED = {"tp", "fp", "fn", "tn"}
_MM = ("hd", "hd95", "hd95_pooled", "assd", "msd_pred_to_ref", "msd_ref_to_pred")


def _unit(metric: str) -> str:
    if metric in _MM:
        return " (mm)"
    return " (mm³)" if metric.endswith("_mm3") else ""


def summarize(rows: Sequence[MetricRow], metrics: Sequence[str]) -> list[MetricRow]:
    """Per label and metric: count, NaN and inf counts, mean, std, median, quartiles (finite values).

    Example:
        >>> summarize([{"label": 1, "dice": 0.5}, {"label": 1, "dice": float("nan")}], ["dice"])[0]["n_nan"]
        1
    """
    summary: list[MetricRow] = []
    for label in sorted({int(row["label"]) for row in rows}):
        for metric in metrics:
            values = np.array(
                [float(r[metric]) for r in rows if r["label"] == label], dtype=np.float64
            )
            finite = values[np.isfinite(values)]
            stats = {
                "mean": math.nan,
                "std": math.nan,
                "median": math.nan,
                "q1": math.nan,
                "q3": math.nan,
            }
            if finite.size:
                q1, median, q3 = np.percentile(finite, [25, 50, 75])
                stats = {
                    "mean": float(finite.mean()),
                    "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
                    "median": float(median),
                    "q1": float(q1),
                    "q3": float(q3),
                }
            summary.append(
                {
                    "label": label,
                    "metric": metric,
                    "count": int(values.size),
                    "n_nan": int(np.isnan(values).sum()),
                    "n_inf": int(np.isinf(values).sum()),
                    **stats,
                }
            )
    return summary


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return buffer.getvalue()


def plot_metric(rows: Sequence[MetricRow], metric: str) -> bytes:
    """Box plot plus jittered strip of one metric per label (finite values), as PNG bytes."""
    labels = sorted({int(row["label"]) for row in rows})
    groups = [
        np.array([float(r[metric]) for r in rows if r["label"] == label], dtype=np.float64)
        for label in labels
    ]
    groups = [g[np.isfinite(g)] for g in groups]
    figure = Figure(figsize=(1.2 + 0.9 * len(labels), 3.2))
    axes = figure.add_subplot()
    axes.boxplot(groups, showfliers=False)
    axes.set_xticks(range(1, len(labels) + 1), [str(label) for label in labels])
    jitter = np.random.default_rng(0)
    for position, values in enumerate(groups, start=1):
        axes.scatter(position + jitter.uniform(-0.15, 0.15, values.size), values, s=8, alpha=0.6)
    axes.set_xlabel("label")
    axes.set_title(metric + _unit(metric))
    return _png(figure)


def subject_ranking(rows: Sequence[MetricRow], metric: str = "dice") -> list[str]:
    """Subjects sorted from best to worst by their mean ``metric`` over labels (NaN ignored)."""
    scores: dict[str, list[float]] = {}
    for row in rows:
        value = float(row.get(metric, math.nan))
        scores.setdefault(str(row["subject"]), [])
        if math.isfinite(value):
            scores[str(row["subject"])].append(value)
    mean = {name: (np.mean(v) if v else -math.inf) for name, v in scores.items()}
    return sorted(mean, key=lambda name: mean[name], reverse=True)


def pick_cases(ranking: Sequence[str]) -> list[tuple[str, str]]:
    """``[("best", id), ("median", id), ("worst", id)]`` (fewer for fewer subjects)."""
    if not ranking:
        return []
    picks = [("best", ranking[0]), ("median", ranking[len(ranking) // 2]), ("worst", ranking[-1])]
    picked: list[tuple[str, str]] = []
    for kind, name in picks:
        if name not in {taken for _, taken in picked}:
            picked.append((kind, name))
    return picked


def _slice_indices(ref: np.ndarray, count: int = 3) -> list[int]:
    """Slices along the last axis through the reference foreground (or the middle)."""
    hits = np.flatnonzero(ref.reshape(-1, ref.shape[-1]).any(axis=0))
    low, high = (hits[0], hits[-1]) if hits.size else (0, ref.shape[-1] - 1)
    return sorted({round(float(v)) for v in np.linspace(low, high, count + 2)[1:-1]})


def case_figure(
    ref: np.ndarray,
    pred: np.ndarray,
    image: np.ndarray | None,
    title: str,
    *,
    spacing: Sequence[float] = (1.0, 1.0),
) -> bytes:
    """A few slices with reference (green) and prediction (red) contours over the image.

    Shape:
        ref, pred, image: ``(X, Y, Z)`` (a 2D pair is shown as one slice).
    """
    if ref.ndim == 2:
        ref, pred = ref[..., None], pred[..., None]
        image = image[..., None] if image is not None else None
    background = image if image is not None else (ref > 0).astype(np.float32)
    indices = _slice_indices(ref)
    figure = Figure(figsize=(3.0 * len(indices), 3.2))
    for column, index in enumerate(indices, start=1):
        axes = figure.add_subplot(1, len(indices), column)
        aspect = float(spacing[1]) / float(spacing[0])  # rows are y, columns x: true mm proportions
        axes.imshow(background[..., index].T, cmap="gray", origin="lower", aspect=aspect)
        for label in sorted(
            set(np.unique(ref[..., index])) | set(np.unique(pred[..., index])) - {0}
        ):
            for mask, colour in ((ref, "lime"), (pred, "red")):
                plane = (mask[..., index] == label).T.astype(np.float32)
                if plane.any() and label != 0:
                    axes.contour(plane, levels=[0.5], colors=colour, linewidths=0.8)
        axes.set_title(f"slice {index}", fontsize=8)
        axes.axis("off")
    figure.suptitle(f"{title} (green: reference, red: prediction)", fontsize=9)
    return _png(figure)


def _image_tag(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'


def _table(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else html.escape(str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(c, ''))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


#: sorts a table by the clicked column (numbers numerically) and counts the pictures that loaded
_SCRIPT = """<script>
function vfSort(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th);
const rows=[...t.querySelectorAll('tr')].slice(1),up=th.dataset.dir!=='up';th.dataset.dir=up?'up':'down';
const key=r=>{const v=r.children[i].textContent;const n=parseFloat(v);return isNaN(n)?v:n};
rows.sort((a,b)=>{const x=key(a),y=key(b);return (x>y?1:x<y?-1:0)*(up?1:-1)});rows.forEach(r=>t.appendChild(r));}
window.addEventListener('load',()=>{const imgs=[...document.images];
document.body.dataset.imagesLoaded=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;
document.body.dataset.images=imgs.length;});
</script>"""


def degenerate_notes(rows: Sequence[Mapping[str, object]]) -> list[str]:
    """Plain-language explanations of the values that look wrong but are not (one per kind)."""

    def count(metric: str, test: Callable[[float], bool]) -> int:
        values = [r.get(metric) for r in rows]
        return sum(1 for v in values if isinstance(v, (int, float)) and test(float(v)))

    notes = []
    zero = count("hd95", lambda v: v == 0.0)
    if zero:
        notes.append(
            f"HD95 = 0 on {zero} row(s): at least 95 % of each surface lies on the other (the "
            "masks agree to within a voxel's surface); it is a perfect score, not a failure."
        )
    empty = count("dice", lambda v: v != v)
    if empty:
        notes.append(
            f"Dice is NaN on {empty} row(s): prediction and reference are both empty for that "
            "label, so overlap is undefined; these rows are left out of the means (n_nan)."
        )
    infinite = count("hd95", lambda v: v == float("inf"))
    if infinite:
        notes.append(
            f"Distances are infinite on {infinite} row(s): one of the two masks is empty, so "
            "there is no surface to measure to; these rows are counted in n_inf."
        )
    return notes


def render_html(
    summary: Sequence[Mapping[str, object]],
    plots: dict[str, bytes],
    cases: Sequence[tuple[str, bytes]],
    problems: Sequence[tuple[str, str, str]],
    warnings: Sequence[str],
    *,
    per_case: Sequence[Mapping[str, object]] = (),
    per_case_columns: Sequence[str] = (),
    provenance: Mapping[str, object] | None = None,
    sections: Sequence[tuple[str, str]] = (),
) -> str:
    """The self-contained report page (pictures inline; columns of the per-case table sort).

    ``sections``: ``(title, html)`` pairs the caller adds after the summary (e.g. the demo's
    check on real subjects); the html is inserted as given.
    """
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>voxelflow evaluation</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{cursor:pointer}"
        "img{margin:4px}</style>" + _SCRIPT + "</head><body>",
        "<h1>voxelflow evaluation</h1>",
        "<p>Statistics over finite values; <code>n_nan</code> counts undefined values (e.g. both masks "
        "empty), <code>n_inf</code> distances to an empty mask. Definitions: docs/metrics.md.</p>",
    ]
    if problems:
        parts.append(
            "<h2>Problems</h2>"
            + _table(
                [dict(zip(("subject", "kind", "message"), p)) for p in problems],
                ("subject", "kind", "message"),
            )
        )
    if warnings:
        parts.append(
            "<h2>Warnings</h2><ul>"
            + "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
            + "</ul>"
        )
    if provenance:
        parts.append(
            "<h2>Provenance</h2>"
            + _table([{"what": k, "value": v} for k, v in provenance.items()], ("what", "value"))
        )
    notes = degenerate_notes(per_case)
    if notes:
        parts.append(
            "<h2>Reading the values</h2><ul>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in notes)
            + "</ul>"
        )
    parts.append("<h2>Summary</h2>" + _table(summary, SUMMARY_COLUMNS))
    parts += [f"<h2>{html.escape(title)}</h2>{body}" for title, body in sections]
    parts.append(
        "<h2>Distributions</h2>" + "".join(_image_tag(png, name) for name, png in plots.items())
    )
    parts.append(
        "<h2>Cases</h2>" + "".join(f"<div>{_image_tag(png, name)}</div>" for name, png in cases)
    )
    if per_case:
        table = _table(per_case, per_case_columns).replace("<th>", "<th onclick='vfSort(this)'>")
        parts.append("<h2>Every case</h2><p>Click a column to sort.</p>" + table)
    parts.append("</body></html>")
    return "\n".join(parts)


#: ``subject → (ref, pred, image or None, spacing)``: arrays ``(X, Y[, Z])`` and mm per axis.
CaseLoader = Callable[[str], tuple[np.ndarray, np.ndarray, "np.ndarray | None", tuple[float, ...]]]


def _case_pictures(ranking: list[str], load_case: CaseLoader | None) -> list[tuple[str, bytes]]:
    """Slices of the best, median and worst subjects (``load_case(subject) → ref, pred, image``)."""
    if load_case is None:
        return []
    pictures = []
    for kind, name in pick_cases(ranking):
        ref, pred, image, spacing = load_case(name)
        if pred.shape != ref.shape or (image is not None and image.shape != ref.shape):
            continue  # a resampled prediction: the contours would not line up
        figure = case_figure(ref, pred, image, f"{kind}: {name}", spacing=spacing)
        pictures.append((f"{kind}: {name}", figure))
    return pictures


def write_outputs(
    result: EvaluationResult,
    out_dir: Path,
    metrics: Sequence[str],
    load_case: CaseLoader | None = None,
    *,
    report: bool = True,
    extra_columns: Sequence[str] = (),
    label_names: Mapping[int, str] | None = None,
    provenance: Mapping[str, object] | None = None,
    sections: Sequence[tuple[str, str]] = (),
) -> None:
    """Write ``per_case.csv``, ``summary.csv``, ``problems.csv`` and (with ``report``) plots + HTML.

    Args:
        result: the evaluation result. out_dir: output folder. metrics: columns written.
        load_case: ``subject → (ref, pred, image or None, spacing)`` (see :data:`CaseLoader`) for the case
            pictures of the best, median and worst subjects; ``None``: no pictures.
        report: also write ``plots/*.png`` and ``report.html``.
        extra_columns: further per-case columns (the descriptive ones), written to both CSVs
            after the metrics and summarised, but neither plotted nor shown in the report.
        label_names: label value → name, written as ``label_name`` beside the numeric
            ``label`` column and shown in the report.
        provenance: what produced the evaluation (run, config hash, checkpoint, tolerance,
            surface definition, voxelflow version ...), shown at the top of the report.
        sections: ``(title, html)`` pairs added to the report after the summary.
    """
    from voxelflow.metrics.evaluate_io import write_csv

    out_dir.mkdir(parents=True, exist_ok=True)
    columns = (*metrics, *(c for c in extra_columns if c not in metrics))
    names = {int(k): str(v) for k, v in (label_names or {}).items()}
    for row in result.rows:
        label = row.get("label")
        row["label_name"] = names.get(int(label), "") if isinstance(label, (int, float)) else ""
    write_csv(out_dir / "per_case.csv", result.rows, ("subject", "label", "label_name", *columns))
    summary = summarize(result.rows, columns)
    write_csv(out_dir / "summary.csv", summary, SUMMARY_COLUMNS)
    problem_rows = [dict(zip(("subject", "kind", "message"), p)) for p in result.problems]
    write_csv(out_dir / "problems.csv", problem_rows, ("subject", "kind", "message"))
    if not report:
        return
    plots = (
        {m: plot_metric(result.rows, m) for m in metrics if m not in _NOT_PLOTTED}
        if result.rows
        else {}
    )
    for name, png in plots.items():
        (out_dir / "plots").mkdir(exist_ok=True)
        (out_dir / "plots" / f"{name}.png").write_bytes(png)
    ranking = (
        subject_ranking(result.rows, "dice" if "dice" in metrics else metrics[0])
        if result.rows
        else []
    )
    cases = _case_pictures(ranking, load_case)
    shown = [row for row in summary if row["metric"] in metrics]
    page = render_html(
        shown,
        plots,
        cases,
        result.problems,
        result.warnings,
        per_case=result.rows,
        per_case_columns=("subject", "label", "label_name", *metrics),
        provenance=provenance,
        sections=sections,
    )
    (out_dir / "report.html").write_text(page, encoding="utf-8")

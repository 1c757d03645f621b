"""``effnet eval --report DIR``: the evaluation report as pictures, in one self-contained ``report.html``.

The page embeds every figure as a ``data:`` URI and its thumbnails as small JPEG ``data:`` URIs: it opens
offline, from a mail attachment or a CI artifact, and makes no network request (no fonts, scripts or styles
from elsewhere). The figures are also written beside it as PNG and SVG, for slides and docs. matplotlib's Agg
backend draws them (:mod:`effnet.figures`). Everything is built from the :class:`EvalReport` alone (plus the
images' own files for the thumbnails), so ``--engine ray`` gets the same report.
"""

from __future__ import annotations

import html
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..errors import EffnetError, ImageError
from ..figures import data_uri, figure_bytes, pyplot, write_bytes
from ..fileio import check_replaceable_dir, whole_dir
from ..labels import short_label
from ..preprocess import load_image
from .report import EvalReport

__all__ = ["write_html_report", "REPORT_FILE", "REPORT_NAMES", "WORST_CLASSES", "THUMB_PX", "thumbnail"]

REPORT_FILE = "report.html"
_FIGURES = ("accuracy", "per_class", "confused", "reliability", "topk")
# Every name a report folder can hold: anything else in an earlier report is the user's, and refused (the
# folder is replaced whole).
REPORT_NAMES = frozenset({REPORT_FILE, "report.json"} | {f"{n}.{e}" for n in _FIGURES for e in ("png", "svg")})
WORST_CLASSES = 20
THUMBS_PER_CLASS = 4
THUMB_PX = 72


def _accuracy_figure(plt: Any, r: EvalReport) -> Any:
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    names = ["top-1", "top-5"]
    ours = [r.top1, r.top5]
    ax.bar([0, 1], ours, width=0.5, color="#2f6fde", label="this run")
    ref = r.reference
    if ref is not None:
        refs = [ref.top1, ref.top5]
        for i, v in enumerate(refs):
            if v is not None:
                ax.hlines(v, i - 0.3, i + 0.3, colors="#d62728", linewidth=2.5, label="reference" if i == 0 else None)
    for i, v in enumerate(ours):
        delta = (r.delta_top1, r.delta_top5)[i]
        ax.text(i, v + 1.5, f"{v:.2f} %" + ("" if delta is None else f"\n({delta:+.2f} pp)"), ha="center", fontsize=9)
    ax.set_xticks([0, 1], names)
    ax.set_ylim(0, 115)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{r.model} ({r.weights}), {r.count:,} images", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _worst_classes(r: EvalReport) -> list:
    """Up to ``WORST_CLASSES`` classes with at least one top-1 miss, lowest top-1 first."""
    missed = [c for c in r.per_class if c.top1_correct < c.count]
    return sorted(missed, key=lambda c: (c.top1, c.top5, -c.count, c.index))[:WORST_CLASSES]


def _per_class_figure(plt: Any, r: EvalReport) -> Any:
    worst = _worst_classes(r)[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * max(1, len(worst)) + 1.2))
    ax.barh(range(len(worst)), [c.top1 for c in worst], color="#2f6fde", label="top-1")
    ax.scatter([c.top5 for c in worst], range(len(worst)), color="#ff7f0e", zorder=3, s=14, label="top-5")
    ax.set_yticks(range(len(worst)), [f"{short_label(c.label, 26)} ({c.count})" for c in worst], fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy (%) — class (images)")
    ax.set_title(f"the {len(worst)} classes with the lowest top-1 accuracy (those with a miss)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _confused_figure(plt: Any, r: EvalReport) -> Any:
    pairs = list(r.confused[:15])[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * max(1, len(pairs)) + 1.2))
    if pairs:
        ax.barh(range(len(pairs)), [c.count for c in pairs], color="#9467bd")
        names = [f"{short_label(c.true.label, 20)} → {short_label(c.predicted.label, 20)}" for c in pairs]
        ax.set_yticks(range(len(pairs)), names)
        ax.tick_params(axis="y", labelsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        ax.text(0.5, 0.5, "no mistakes", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("images (true → predicted top-1)")
    ax.set_title("most-confused class pairs", fontsize=10)
    return fig


def _reliability_figure(plt: Any, r: EvalReport) -> Any:
    cal = r.calibration
    if cal is None:
        raise EffnetError("the report has no calibration to draw: its engine returned top-k rows only")
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5, 5.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    width = cal.bins[0].upper - cal.bins[0].lower
    centres = [(b.lower + b.upper) / 2 for b in cal.bins]
    used = [(c, b) for c, b in zip(centres, cal.bins, strict=True) if b.count]
    ax.bar([c for c, _ in used], [b.accuracy for _, b in used], width=width * 0.95, color="#2f6fde", label="accuracy")
    ax.scatter(
        [c for c, _ in used],
        [b.confidence for _, b in used],
        marker="_",
        s=180,
        color="#d62728",
        zorder=3,
        label="mean confidence",
    )
    ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfect calibration")
    ax.set_ylim(0, 1)
    ax.set_ylabel("top-1 accuracy")
    ax.set_title(f"reliability: ECE {cal.ece:.4f}, NLL {cal.nll:.4f}, Brier {cal.brier:.4f}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(centres, [b.count for b in cal.bins], width=width * 0.95, color="#7f7f7f")
    ax_n.set_xlim(0, 1)
    ax_n.set_xlabel("top-1 probability (confidence)")
    ax_n.set_ylabel("images")
    return fig


def _topk_figure(plt: Any, r: EvalReport) -> Any:
    ks = list(range(1, len(r.topk_accuracy) + 1))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(ks, r.topk_accuracy, marker="o", color="#2f6fde")
    for k, v in zip(ks, r.topk_accuracy, strict=True):
        if k in (1, 5, ks[-1]):
            ax.annotate(f"{v:.1f}", (k, v), textcoords="offset points", xytext=(0, -13), ha="center", fontsize=8)
    ax.set_xticks(ks)
    ax.set_ylim(min(r.topk_accuracy) - 10, 101)
    ax.set_xlabel("k")
    ax.set_ylabel("top-k accuracy (%)")
    ax.set_title("accuracy by k", fontsize=10)
    ax.grid(alpha=0.3)
    return fig


def thumbnail(path: str) -> str | None:
    """A small JPEG ``data:`` URI of an image, or None when the file cannot be read now."""
    try:
        image = load_image(path)
    except (ImageError, OSError):
        return None
    image.thumbnail((THUMB_PX, THUMB_PX))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)
    return data_uri(buf.getvalue(), "jpeg")


def _misses_html(r: EvalReport) -> str:
    by_class: dict[int, list] = defaultdict(list)
    for outcome in r.images:
        if not outcome.top1_correct:
            by_class[outcome.label].append(outcome)
    # a predicted class may have no image of its own: its name then comes from the confusions, else its index
    label_of = {c.index: c.label for c in r.per_class}
    label_of.update({c.predicted.index: c.predicted.label for c in r.confused})
    rows = []
    for c in _worst_classes(r):
        cells = []
        for miss in by_class.get(c.index, [])[:THUMBS_PER_CLASS]:
            uri = thumbnail(miss.path)
            predicted = miss.top5[0]
            caption = html.escape(short_label(label_of.get(predicted, f"class {predicted}"), 18))
            img = (
                f'<img src="{uri}" alt="{html.escape(Path(miss.path).name)}" title="{html.escape(miss.path)}">'
                if uri
                else '<span class="gone">unreadable</span>'
            )
            cells.append(f"<figure>{img}<figcaption>→ {caption}</figcaption></figure>")
        rows.append(
            f"<tr><td>{html.escape(short_label(c.label, 40))}<br><small>{html.escape(c.synset)}</small></td>"
            f"<td>{c.top1:.1f} %</td><td>{c.top5:.1f} %</td><td>{c.count}</td>"
            f'<td class="thumbs">{"".join(cells) or "—"}</td></tr>'
        )
    return "\n".join(rows)


def write_html_report(report: EvalReport, directory: str | os.PathLike) -> Path:
    """Write ``DIR/report.html``, its figures (``DIR/<name>.png`` and ``.svg``) and ``DIR/report.json``."""
    plt = pyplot("effnet eval --report")
    target = check_replaceable_dir(directory, REPORT_FILE, "the report", REPORT_NAMES)
    with whole_dir(target, "the report") as out:  # written whole: never an old page beside new figures
        _write_report(plt, report, out)
    return target / REPORT_FILE


def _write_report(plt: Any, report: EvalReport, out: Path) -> None:
    figures: dict[str, Any] = {
        "accuracy": _accuracy_figure,
        "per_class": _per_class_figure,
        "confused": _confused_figure,
    }
    if report.calibration is not None:
        figures["reliability"] = _reliability_figure
    if report.topk_accuracy:
        figures["topk"] = _topk_figure
    embedded: dict[str, str] = {}
    for name, draw in figures.items():
        if name not in _FIGURES:  # REPORT_NAMES decides which files of an earlier report may be replaced
            raise EffnetError(f"report figure {name!r} is missing from REPORT_NAMES")
        png = figure_bytes(draw(plt, report), "png", dpi=110)
        svg = figure_bytes(draw(plt, report), "svg")
        write_bytes(out / f"{name}.png", png)
        write_bytes(out / f"{name}.svg", svg)
        embedded[name] = data_uri(png, "png")
    report.write_json(out / "report.json")
    page = _page(report, embedded)
    write_bytes(out / REPORT_FILE, page.encode("utf-8"), "report")


def _page(r: EvalReport, figs: dict[str, str]) -> str:
    e = html.escape
    cal = r.calibration
    ref = r.reference
    ref_text = (
        "none (weights without a record)"
        if ref is None
        else f"top-1 {ref.top1:.2f} %, top-5 {'n/a' if ref.top5 is None else f'{ref.top5:.2f} %'} on "
        f"{e(ref.dataset)} ({e(ref.source)})"
    )
    delta = lambda d: "" if d is None else f" ({d:+.2f} pp)"  # noqa: E731
    facts = [
        ("model", f"{e(r.model)} ({e(r.weights)})"),
        ("backend", f"{e(r.backend)} {e(r.precision)}"),
        ("data", f"{e(r.dataset)} [{e(r.layout)}], {r.count:,} evaluated, {r.failed:,} failed"),
        ("top-1", f'<span id="top1">{r.top1:.2f}</span> %{delta(r.delta_top1)}'),
        ("top-5", f'<span id="top5">{r.top5:.2f}</span> %{delta(r.delta_top5)}'),
        ("reference", ref_text),
        (
            "speed",
            f'<span id="ips">{r.images_per_second:.1f}</span> images/s ({r.seconds:.1f} s, batch {r.batch_size}, '
            f"{r.workers} {r.workers_are})",
        ),
    ]
    if cal is not None:
        facts.append(
            (
                "calibration",
                f'ECE <span id="ece" data-value="{cal.ece!r}">{cal.ece:.4f}</span> ({len(cal.bins)} bins), '
                f'NLL <span id="nll" data-value="{cal.nll!r}">{cal.nll:.4f}</span>, '
                f'Brier <span id="brier" data-value="{cal.brier!r}">{cal.brier:.4f}</span>',
            )
        )
    if r.topk_accuracy:
        facts.append(("top-k", ", ".join(f"k={k}: {v:.1f} %" for k, v in enumerate(r.topk_accuracy, 1))))
    table = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)

    def fig(name: str, alt: str) -> str:
        return (
            f'<figure class="fig"><img id="fig-{name}" src="{figs[name]}" alt="{e(alt)}"></figure>'
            if name in figs
            else ""
        )

    sections = [
        fig("accuracy", "top-1 and top-5 accuracy with the reference"),
        fig("topk", "top-k accuracy for k = 1..10"),
        fig("reliability", "reliability diagram"),
        "<h2>Worst classes</h2>",
        fig("per_class", "per-class accuracy of the worst classes"),
        '<table class="worst"><tr><th>class</th><th>top-1</th><th>top-5</th><th>images</th>'
        f"<th>misses (→ predicted)</th></tr>\n{_misses_html(r)}</table>",
        "<h2>Most-confused pairs</h2>",
        fig("confused", "most-confused class pairs"),
    ]
    if r.failures:
        items = "".join(f"<li>{e(f.path)}: {e(f.error)}</li>" for f in r.failures[:50])
        sections.append(f"<h2>Images that could not be read ({r.failed:,})</h2><ul>{items}</ul>")
    summary = json.dumps({"top1": r.top1, "top5": r.top5, "ece": None if cal is None else cal.ece})
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>effnet eval: {e(r.model)} on {e(Path(r.dataset).name)}</title>
<style>
 body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 980px; padding: 16px; color: #1c1e21; }}
 table {{ border-collapse: collapse; margin: 8px 0 16px; }}
 th, td {{ text-align: left; padding: 3px 10px; border-bottom: 1px solid #e3e6ec; vertical-align: top; }}
 .fig {{ display: inline-block; margin: 6px; }} .fig img {{ max-width: 100%; }}
 .thumbs figure {{ display: inline-block; margin: 0 6px 4px 0; text-align: center; font-size: 11px; }}
 .thumbs img {{ display: block; height: {THUMB_PX}px; }} .gone {{ color: #b3261e; }}
</style></head><body>
<h1>effnet eval report</h1>
<table class="facts">{table}</table>
{"".join(sections)}
<script type="application/json" id="summary">{summary}</script>
</body></html>
"""

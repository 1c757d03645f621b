"""The audit's files: ``--report DIR`` (one self-contained ``audit.html`` with thumbnails, made like the eval
report: every image a small JPEG ``data:`` URI, no request leaves the page) and ``--write-relabel FILE`` (a CSV
of the suggested labels for a person to review). Each is written whole (a temporary file, then a rename)."""

from __future__ import annotations

import contextlib
import csv
import html
import io
import os
from pathlib import Path
from typing import Any

from ..errors import EffnetError
from ..evaluate.html import THUMB_PX, thumbnail
from ..fileio import atomic_write, new_output_dir
from .run import AuditReport

__all__ = [
    "AUDIT_PAGE",
    "AUDIT_JSON",
    "check_destinations",
    "relabel_csv_text",
    "write_relabel_csv",
    "write_audit_page",
    "MAX_ROWS",
]

AUDIT_PAGE = "audit.html"
AUDIT_JSON = "audit.json"
MAX_ROWS = 200  # per section of the page: the JSON holds them all


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def check_destinations(
    report_dir: str | None, files: list[str | None], inputs: list[str | None], stack: contextlib.ExitStack
) -> None:
    """Before any work: every destination writable, no two outputs on one path, and none inside DATA or --val
    (the audit never writes there). The folders this makes are removed again (when still empty) if the block
    ``stack`` guards fails: a failed audit leaves nothing behind."""
    targets = [Path(f) for f in files if f] + ([Path(report_dir)] if report_dir else [])
    for t in targets:
        for folder in inputs:
            if folder and _inside(t, Path(folder)):
                raise EffnetError(f"{t} is inside {folder}: the audit does not write into the folders it reads")
    outputs = [Path(f) for f in files if f]
    if report_dir:
        outputs += [Path(report_dir) / AUDIT_PAGE, Path(report_dir) / AUDIT_JSON]
    seen: dict[Path, Path] = {}
    for o in outputs:
        first = seen.setdefault(o.resolve(), o)
        if first is not o:
            raise EffnetError(f"two audit outputs would be written to one file ({first} and {o}): give each its own")
    for f in files:
        if f:
            if Path(f).is_dir():
                raise EffnetError(f"cannot write {f}: it is a folder")
            stack.enter_context(new_output_dir(Path(f).parent, "the audit output"))
    if report_dir:
        stack.enter_context(new_output_dir(Path(report_dir), "the audit report"))


def _csv_cell(text: str) -> str:
    """A text cell a spreadsheet will not run: one starting with = + - @ gets a leading ' (OWASP's rule
    against CSV formula injection; a file or class name is user data)."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text


def relabel_csv_text(report: AuditReport) -> str:
    """path, given, suggested, score: one row per label issue, most likely wrong first."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "given", "suggested", "score"])
    for row in report.label_issues:
        writer.writerow([_csv_cell(row["path"]), _csv_cell(row["given"]), _csv_cell(row["suggested"]), row["score"]])
    return buf.getvalue()


def write_relabel_csv(report: AuditReport, path: str | os.PathLike) -> Path:
    """:func:`relabel_csv_text` into ``path``, whole."""
    text = relabel_csv_text(report)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), "relabel CSV")


def _cell(path: str, caption: str) -> str:
    uri = thumbnail(path)
    img = (
        f'<img src="{uri}" alt="{html.escape(Path(path).name)}" title="{html.escape(path)}">'
        if uri
        else '<span class="gone">unreadable</span>'
    )
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _section(title: str, rows: list[dict[str, Any]], cells: Any, count_note: str = "") -> str:
    if not rows:
        return f"<h2>{html.escape(title)} (0)</h2><p>none found</p>"
    body = "\n".join(f'<div class="row">{cells(r)}</div>' for r in rows[:MAX_ROWS])
    more = f"<p>… and {len(rows) - MAX_ROWS} more in the JSON</p>" if len(rows) > MAX_ROWS else ""
    return f"<h2>{html.escape(title)} ({len(rows)}){count_note}</h2>{body}{more}"


def _label_fact(check: dict[str, Any], embedding: str) -> str:
    if not check["ran"]:
        return f"not checked: {html.escape(check['reason'])}"
    text = (f"{html.escape(embedding)} embedding, cross-validated accuracy {check['cv_accuracy']:.1%}, majority "
            f"baseline {check['majority_baseline']:.1%}")  # fmt: skip
    if not check["reliable"]:
        text += ' <b class="gone">unreliable: the probe did not learn these classes; the list below is a hint</b>'
    return text


def write_audit_page(report: AuditReport, directory: str | os.PathLike) -> Path:
    """``DIR/audit.html`` and ``DIR/audit.json``."""
    out = Path(directory)
    e = html.escape
    facts = [
        ("data", f"{e(report.data)}: {report.images} images"),
        ("validation", e(f"{report.val}: {report.val_images} images") if report.val else "—"),
        ("model", f"{e(report.model)} ({e(report.weights)})"),
        ("classes", ", ".join(f"{e(c)} {v['images']}" for c, v in report.classes.items())),
        ("labels", _label_fact(report.label_check, report.label_embedding)),
    ]  # fmt: skip
    table = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    sections = [
        _section(
            "Likely wrong labels",
            report.label_issues,
            lambda r: _cell(r["path"], f"{r['given']} → {r['suggested']} ({r['score']:.2f})"),
            ", most likely first",
        ),
        _section(
            "Duplicates",
            report.duplicates,
            lambda r: "".join(
                _cell(p, "exact" if r["exact"] else f"sim {r['similarity']:.2f}") for p in r["paths"][:8]
            ),
        ),
        _section(
            "Leakage into validation",
            report.leakage,
            lambda r: _cell(r["data"], "data") + _cell(r["val"], f"val, sim {r['similarity']:.2f}"),
        ),
        _section("Outliers", report.outliers, lambda r: _cell(r["path"], f"{r['class']} ({r['score']:.2f})")),
        _section("Unreadable", report.unreadable, lambda r: f"<p>{e(r['path'])}: {e(r['error'])}</p>"),
        _section("Tiny", report.tiny, lambda r: _cell(r["path"], f"{r['width']}x{r['height']}")),
    ]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>effnet audit: {e(Path(report.data).name)}</title>
<style>
 body {{ font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 980px; padding: 16px; color: #1c1e21; }}
 table {{ border-collapse: collapse; margin: 8px 0 16px; }}
 th, td {{ text-align: left; padding: 3px 10px; border-bottom: 1px solid #e3e6ec; vertical-align: top; }}
 .row {{ border-bottom: 1px solid #e3e6ec; padding: 4px 0; }}
 figure {{ display: inline-block; margin: 0 6px 4px 0; text-align: center; font-size: 11px; }}
 figure img {{ display: block; height: {THUMB_PX}px; }} .gone {{ color: #b3261e; }}
</style></head><body>
<h1>effnet audit</h1>
<table class="facts">{table}</table>
{"".join(sections)}
</body></html>
"""
    if not out.is_dir():
        raise EffnetError(f"cannot write the audit report: {out} is not a folder")
    # Everything is computed before the first write; the page first, the JSON (what tools read) last.
    page_file = atomic_write(out / AUDIT_PAGE, lambda tmp: tmp.write_text(page, encoding="utf-8"), "audit report")
    report.write_json(out / AUDIT_JSON)
    return page_file

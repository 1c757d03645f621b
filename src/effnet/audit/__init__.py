"""``effnet audit``: wrong labels, duplicates, leakage and outliers in the class folders you train on."""

from __future__ import annotations

from .run import AuditReport, audit

__all__ = ["AuditReport", "audit"]

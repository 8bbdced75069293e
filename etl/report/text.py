"""What people read: run summaries and mapping coverage, as plain text tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from etl import standard
from etl.mapping import Mapping

COUNT_COLUMNS = ("extracted", "inserted", "updated", "deleted", "unchanged", "rejected",
                 "duplicates", "skipped_deleted", "warnings", "overridden")
#: `ingest_run` columns of counts whose name differs from the `Counts` attribute
RUN_COLUMN = {"skipped_deleted": "skippedDeleted"}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A fixed-width text table (CJK characters count double)."""
    def width(text: str) -> int:
        return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)

    cells = [[str(h) for h in headers]] + [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max(width(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append("  ".join(v + " " * (widths[i] - width(v)) for i, v in enumerate(r)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_summary(results: Sequence) -> str:
    """One line per unit and dataset, the totals, and the most frequent reject reasons."""
    rows, totals, reasons = [], Counter(), Counter()
    for r in results:
        c = r.counts
        values = [getattr(c, k) for k in COUNT_COLUMNS]
        totals.update(dict(zip(COUNT_COLUMNS, values)))
        reasons.update(r.reasons)
        batches = " ".join(f"{bt}:{b}" for bt, b in c.batches.items())
        rows.append([r.mapping, r.tx_code, r.table, r.mode, r.status, *values, batches])
    rows.append(["total", "", "", "", "", *[totals[k] for k in COUNT_COLUMNS], ""])
    out = [table(["unit", "tx", "table", "mode", "status", *COUNT_COLUMNS, "batches"], rows)]
    if reasons:
        top = ", ".join(f"{k} ×{n}" for k, n in reasons.most_common(8))
        out.append(f"top reject reasons (field:rule): {top}")
    failed = [r for r in results if r.status != "success"]
    for r in failed:
        out.append(f"FAILED {r.mapping} {r.tx_code}: {r.message}")
    notes = [f"{r.mapping} {r.tx_code}: {r.message}" for r in results if r.status == "success" and r.message]
    out += notes
    return "\n".join(out)


def coverage(mapping: Mapping, origins: dict[tuple[str, str], str] | None = None) -> str:
    """Per dataset, how each standard field is filled: column, column+default, default,
    constant, or missing (required ones flagged); with `origins` (a unit that extends a
    template), also which file each rule comes from."""
    rows = []
    for ds in standard.DATASETS:
        spec = mapping.datasets.get(ds.tx_code)
        if spec is None:
            rows.append([ds.tx_code, ds.table, "(not mapped)", "", "", ""])
            continue
        checks = mapping.checks_for(ds.tx_code)
        for f in ds.fields:
            rule = spec.fields.get(f.name)
            if rule is None:
                how = "unit" if ds.tx_code == "01" and f.name in ("orgNo", "comName") else (
                    "MISSING (required)" if f.required else "missing")
                src = ""
            elif rule.value is not None:
                how, src = "constant", str(rule.value)
            elif rule.column:
                how = "column" + (" + values" if rule.values else "") + (" + default" if rule.default else "")
                src = rule.column
                if rule.file is not None:  # an attachment collected (etl.media.attachments)
                    how, src = how + " + file", f"{src} ({rule.file.describe()})"
            else:
                how, src = "default", rule.default or ""
            lowered = ", ".join(f"{r} {lv}" for (name, r), lv in sorted(checks.items()) if name == f.name)
            rows.append([ds.tx_code, ds.table, f.name, how, src, lowered]
                        + ([origins.get((ds.tx_code, f.name), "")] if origins is not None else []))
    if origins is not None:
        for r in rows:
            r.extend([""] * (7 - len(r)))
    return table(["tx", "table", "field", "filled by", "source", "checks lowered"]
                 + (["from"] if origins is not None else []), rows)


def reads_from(mapping: Mapping, origins: dict[str, tuple[str, str, str]]) -> str:
    """Per dataset, where `etl run` reads it from: the connection, the key naming it and the
    file holding that key (`etl.mapping.templates.source_origins`)."""
    rows = [[tx, standard.BY_TX_CODE[tx].table if tx in standard.BY_TX_CODE else "", *origins[tx]]
            for tx in mapping.datasets if tx in origins]
    return table(["tx", "table", "reads from", "key", "in file"], rows)


def unit_summary(units: Sequence[tuple[Any, Any, int]]) -> str:
    """`etl check` over many files: one line a unit (file, orgNo, name, template, datasets,
    ok or its number of problems) and a count line. `units`: (path, Mapping or None, problems)."""
    from etl.mapping.templates import raw_unit

    rows = []
    for path, m, n in units:
        if m is not None:
            org, name = m.unit.orgNo, m.unit.comName
            extends, datasets = (m.templates[0][0] if m.templates else ""), ",".join(m.datasets)
        else:
            org, name, extends = raw_unit(path)
            datasets = ""
        rows.append([str(path), org, name, extends, datasets, "ok" if not n else f"{n} problem(s)"])
    bad = sum(1 for _, _, n in units if n)
    return "\n".join([table(["unit file", "orgNo", "comName", "extends", "datasets", "status"], rows),
                      f"{len(units)} unit(s): {len(units) - bad} ok, {bad} with problems"])


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else ""


def freshness(statuses: Sequence) -> str:
    """The `etl freshness` table (`etl.report.freshness.DatasetStatus` rows, in the order given)
    and a count line (pending: never loaded, first load not yet due)."""
    rows = [[s.mapping or ("(interface)" if s.route == "interface" else ""), s.org_no, s.com_name, s.tx_code, s.frequency, _when(s.last_success),
             s.status, s.records, s.rejected, s.extracted,
             " ".join((s.message or "").split())[:120]] for s in statuses]
    counts = Counter(s.status for s in statuses)
    line = ", ".join(f"{counts.get(k, 0)} {k.replace('_', ' ')}" for k in
                     ("failing", "late", "never", "pending", "on_time"))
    return "\n".join([table(["unit", "orgNo", "name", "tx", "frequency", "last success (CST)",
                             "status", "records", "rejected", "extracted", "message"], rows),
                      f"{len(statuses)} dataset(s): {line}"])


SHOWN = 20  # examples of each kind printed per dataset (more with --json, all counted)


def reconciliation_details(r) -> str:
    """What differs in one `etl.report.reconcile.DatasetReconciliation`, masked, a few of each kind."""
    out = []
    head = f"{r.tx_code} {r.table}"

    def more(listed: int, total: int) -> None:
        if total > listed:
            out.append(f"    … and {total - listed} more (--json lists up to 200)")

    if r.message:
        out.append(f"{head}: {r.state}: {r.message}")
    if r.missing:
        out.append(f"{head}: valid at the source, not in the target (source key):")
        out += [f"    {k}" for k in r.missing[:SHOWN]]
        more(min(len(r.missing), SHOWN), r.missing_count)
    if r.extra:
        out.append(f"{head}: active in the target, not (validly) at the source (ID):")
        out += [f"    {k}" for k in r.extra[:SHOWN]]
        more(min(len(r.extra), SHOWN), r.extra_count)
    if r.differing:
        out.append(f"{head}: differing fields (ID, source key, field: source -> target):")
        out += [f"    {d.id} {d.source_key} {d.field}: {d.source!r} -> {d.target!r}"
                for d in r.differing[:SHOWN]]
        shown_ids = len({d.id for d in r.differing[:SHOWN]})
        more(shown_ids, r.differing_count)
    if r.not_ingested:
        out.append(f"{head}: not ingested (rejected at the source; source key, field:rule, why):")
        out += [f"    {k} {rule}: {msg}" for k, rule, msg in r.not_ingested[:SHOWN]]
        more(len({k for k, *_ in r.not_ingested[:SHOWN]}), r.not_ingested_count)
    return "\n".join(out)

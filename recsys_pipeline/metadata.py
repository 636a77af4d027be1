"""Dagster metadata builders shared by the assets and checks: schema, preview, plots, findings."""

import base64
from collections.abc import Sequence

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from recsys_pipeline import schema as S
from recsys_pipeline.data.validate import Finding

PREVIEW_ROWS = 10


def column_schema(table: pa.Table) -> dg.TableSchema:
    """The table's Arrow schema as Dagster's column schema (shown in the asset's UI page)."""
    return dg.TableSchema(
        columns=[dg.TableColumn(name=f.name, type=str(f.type)) for f in table.schema]
    )


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A small markdown table (lists shown joined with '|')."""
    if not rows:
        return "_(no rows)_"
    columns = list(columns or rows[0].keys())

    def fmt(v: object) -> str:
        if isinstance(v, list):
            v = "|".join(map(str, v))
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |\n"
                          for r in rows)


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """Embed a PNG in markdown metadata (the Dagster UI renders data-URI images)."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def table_metadata(table: pa.Table) -> dict[str, object]:
    """What a person judges a table by: rows, schema, a preview, distinct users/items."""
    meta: dict[str, object] = {
        "dagster/row_count": table.num_rows,
        "dagster/column_schema": column_schema(table),
        "preview": dg.MetadataValue.md(markdown_table(table.slice(0, PREVIEW_ROWS).to_pylist(),
                                                      table.column_names)),
    }
    for col, label in ((S.USER_ID, "distinct_users"), (S.ITEM_ID, "distinct_items")):
        if col in table.column_names:
            meta[label] = pc.count_distinct(table[col]).as_py()
    return meta


def findings_result(findings: Sequence[Finding], **metadata: object) -> dg.AssetCheckResult:
    """An asset-check result from validator findings: pass when there are none, else the counts,
    the messages and a few offending rows."""
    meta: dict[str, object] = dict(metadata)
    meta["violations"] = sum(f.count for f in findings)
    if findings:
        meta["problems"] = dg.MetadataValue.md("\n".join(f"- {f.message}" for f in findings))
        examples = [e for f in findings for e in f.examples][:10]
        if examples:
            meta["examples"] = dg.MetadataValue.md(markdown_table(examples))
    return dg.AssetCheckResult(passed=not findings, metadata=meta)

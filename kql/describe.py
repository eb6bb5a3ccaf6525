"""Documentation generated from the table catalog and the SQL function
registry (``kql --describe``)."""

from __future__ import annotations

from kql.errors import PlanError
from kql.tables import catalog


def _type_name(t) -> str:
    return str(t).replace("uint64", "uint64 (address)") if str(t) == "uint64" else str(t)


def describe(table: str | None = None, markdown: bool = False) -> str:
    cat = catalog()
    if table is not None:
        spec = cat.get(table.lower())
        if spec is None:
            import difflib
            close = difflib.get_close_matches(table.lower(), list(cat), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise PlanError(f"unknown table '{table}'{hint}")
        specs = [spec]
    else:
        specs = list(cat.values())
    if markdown:
        return _markdown(specs)
    from kql import functions
    out = []
    for spec in specs:
        head = spec.name if spec.params is None else f"{spec.name}({', '.join(spec.params)})"
        out.append(f"{'## ' if markdown else ''}{head}")
        out.append(f"  {spec.doc}" if not markdown else spec.doc)
        if spec.walk:
            out.append(f"  rows: {spec.walk}")
        if spec.lookups:
            out.append(f"  key lookups: {', '.join(spec.lookups)}")
        out.append("")
        width = max((len(c.name) for c in spec.columns), default=0)
        for c in spec.columns:
            extra = []
            if c.object_type:
                extra.append(f"object: {c.object_type}")
            if c.optional:
                extra.append("not in *")
            note = f" [{'; '.join(extra)}]" if extra else ""
            out.append(f"  {c.name:<{width}}  {_type_name(c.type):<20} {c.doc}{note}")
        for ex in spec.examples:
            out.append(f"  e.g. {ex}")
        out.append("")
    if table is None:
        out += functions.text()
    return "\n".join(out)


def _markdown(specs) -> str:
    out = ["# kql tables", "",
           "Generated from the table catalog (`python -m kql.describe --markdown`); "
           "`kql --describe TABLE` prints the same.", ""]
    for spec in specs:
        head = spec.name if spec.params is None else f"{spec.name}({', '.join(spec.params)})"
        out += [f"## {head}", "", spec.doc, ""]
        if spec.walk:
            out.append(f"Rows: {spec.walk}.  ")
        if spec.lookups:
            out.append(f"Key lookups (pushed down from `WHERE col = …`): {', '.join(spec.lookups)}.  ")
        if spec.object_column:
            out.append(f"Object column: `{spec.object_column}` (member paths: "
                       f"`{spec.object_column}->member`).")
        out += ["", "| column | type | description |", "|---|---|---|"]
        for c in spec.columns:
            extra = []
            if c.object_type:
                extra.append(f"object `{c.object_type}`")
            if c.optional:
                extra.append("not in `*`")
            note = f" ({'; '.join(extra)})" if extra else ""
            doc = c.doc.replace("|", "\\|")
            out.append(f"| {c.name} | {_type_name(c.type)} | {doc}{note} |")
        out.append("")
        for ex in spec.examples:
            out.append(f"    {ex}")
        if spec.examples:
            out.append("")
    from kql import functions
    out += functions.markdown()
    return "\n".join(out)


if __name__ == "__main__":
    import sys
    sys.stdout.write(describe(None, markdown="--markdown" in sys.argv[1:]))

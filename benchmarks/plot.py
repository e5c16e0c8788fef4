"""Draw total time per problem, interlace_nb beside lme4, as an SVG (no plotting library).

    python -m benchmarks.plot benchmarks/results/<run>.csv [...] --out docs/benchmarks.svg
        [--table table.md]

Reads the runner's CSV files; for each (problem, tool) the last row wins, so
later files override earlier ones. Bars are on a log scale of seconds.
``--table`` also writes the runner's markdown table for those rows.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from xml.sax.saxutils import escape

from .run import markdown_table

TOOLS = {"interlace_nb": "#1f77b4", "lme4": "#ff7f0e"}
ROW_HEIGHT, BAR, LEFT, WIDTH, TOP = 46, 16, 230, 760, 40


def read_rows(paths: list[Path]) -> dict[str, dict[str, dict]]:
    """problem -> tool -> last CSV row, in order of first appearance."""
    table: dict[str, dict[str, dict]] = {}
    for path in paths:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                table.setdefault(row["problem"], {})[row["tool"]] = row
    return table


def typed(row: dict) -> dict:
    """A CSV row with numbers as numbers (what the runner's table expects)."""
    out: dict = {}
    for key, value in row.items():
        if value == "":  # not measured (no lme4 run): left out, as the runner leaves it
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            out[key] = value
            continue
        out[key] = int(number) if key in ("n_rows", "repeats") else number
    return out


def svg(table: dict[str, dict[str, dict]], title: str) -> str:
    """The chart as SVG text."""
    seconds = [float(r["total_s"]) for tools in table.values() for r in tools.values()]
    lo = 10 ** math.floor(math.log10(min(seconds)))
    hi = 10 ** math.ceil(math.log10(max(seconds)))
    span = WIDTH - LEFT - 90

    def x(value: float) -> float:
        return LEFT + span * math.log10(value / lo) / math.log10(hi / lo)

    height = TOP + ROW_HEIGHT * len(table) + 50
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    decade = lo
    while decade <= hi:
        gx = x(decade)
        out.append(f'<line x1="{gx:.1f}" y1="{TOP - 6}" x2="{gx:.1f}" '
                   f'y2="{height - 42}" stroke="#ddd"/>')
        label = f"{decade:g} s"
        out.append(f'<text x="{gx:.1f}" y="{height - 28}" text-anchor="middle">{label}</text>')
        decade *= 10
    for k, (problem, tools) in enumerate(table.items()):
        y0 = TOP + k * ROW_HEIGHT
        first = next(iter(tools.values()))
        name = f"{first.get('label', '')} {problem}".strip()
        rows = f"{int(float(first['n_rows'])):,} rows"
        out.append(f'<text x="{LEFT - 8}" y="{y0 + 15}" text-anchor="end">{escape(name)}</text>')
        out.append(f'<text x="{LEFT - 8}" y="{y0 + 30}" text-anchor="end" fill="#666">'
                   f"{rows}</text>")
        for j, (tool, colour) in enumerate(TOOLS.items()):
            if tool not in tools:
                continue
            total = float(tools[tool]["total_s"])
            by = y0 + j * (BAR + 2)
            out.append(f'<rect x="{LEFT}" y="{by}" width="{x(total) - LEFT:.1f}" '
                       f'height="{BAR}" fill="{colour}"/>')
            out.append(f'<text x="{x(total) + 4:.1f}" y="{by + 12}">{total:.3g} s</text>')
    legend_y = height - 12
    for j, (tool, colour) in enumerate(TOOLS.items()):
        lx = LEFT + j * 140
        out.append(f'<rect x="{lx}" y="{legend_y - 10}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{lx + 16}" y="{legend_y}">{tool}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("csv", nargs="+", type=Path, help="runner CSV files, later ones win")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.svg"))
    parser.add_argument("--title", default="Total time (setup + fit), median of fresh processes")
    parser.add_argument("--table", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)
    table = read_rows(args.csv)
    args.out.write_text(svg(table, args.title))
    print(f"wrote {args.out}")
    if args.table:
        rows = [typed(row) for tools in table.values() for row in tools.values()]
        args.table.write_text(markdown_table(rows, f"From {', '.join(map(str, args.csv))}."))
        print(f"wrote {args.table}")


if __name__ == "__main__":
    main()

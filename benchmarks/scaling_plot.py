"""The scaling plot of ``benchmarks.worker_scaling`` (issue 25): seconds against clicks, one line per job
and worker count, drawn as a plain SVG file (no plotting library in the lock file).

    .venv/bin/python -m benchmarks.scaling_plot RESULT.json [RESULT.json ...] --out docs/worker_scaling.svg

Each RESULT is the JSON document one ``worker_scaling`` run printed (one size of lake). Both axes are
logarithmic; a dotted grey line from each job's 1-worker point at the smallest size shows linear growth
in clicks, for reference.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 400, 70, 170, 40, 50
STYLE = {("sequences", "1"): ("#1f77b4", ""), ("sequences", "2"): ("#1f77b4", "6,4"),
         ("embed", "1"): ("#d62728", ""), ("embed", "2"): ("#d62728", "6,4")}


def _scale(lo: float, hi: float, a: float, b: float):
    lo, hi = math.log10(lo), math.log10(hi)
    return lambda v: a + (math.log10(v) - lo) / (hi - lo) * (b - a)


def _ticks(lo: float, hi: float) -> list[float]:
    out = []
    for exp in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        out += [m * 10 ** exp for m in (1, 2, 5) if lo <= m * 10 ** exp <= hi]
    return out


def svg(results: list[dict]) -> str:
    results = sorted(results, key=lambda r: r["clicks"])
    clicks = [r["clicks"] for r in results]
    series = {key: [(r["clicks"], r["seconds"][key[0]][key[1]]) for r in results] for key in STYLE}
    reference = {job: [(c, series[(job, "1")][0][1] * c / clicks[0]) for c in clicks]
                 for job in ("sequences", "embed")}
    ys = [y for points in [*series.values(), *reference.values()] for _, y in points]
    y_lo, y_hi = min(ys) / 1.3, max(ys) * 1.3
    x_lo, x_hi = clicks[0] / 1.5, clicks[-1] * 1.5
    x = _scale(x_lo, x_hi, LEFT, WIDTH - RIGHT)
    y = _scale(y_lo, y_hi, HEIGHT - BOTTOM, TOP)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
             f'<text x="{LEFT}" y="20" font-size="14">duet on a loopback standalone cluster: '
             'seconds per job (log-log)</text>']
    for t in _ticks(y_lo, y_hi):
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                     'stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g} s</text>')
    for c in clicks:
        parts.append(f'<text x="{x(c):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">'
                     f'{c / 1e6:.1f}M</text>')
    parts.append(f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 10}" text-anchor="middle">'
                 'clicks in the lake</text>')
    parts.append(f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" '
                 f'height="{HEIGHT - TOP - BOTTOM}" fill="none" stroke="#444"/>')

    def polyline(pixels, colour, dash, width=2):
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in pixels)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        return f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="{width}"{dashes}/>'

    def legend(row: int, colour: str, dash: str, label: str, width: int = 2) -> list[str]:
        at = TOP + 10 + 20 * row
        return [polyline([(WIDTH - RIGHT + 10, at), (WIDTH - RIGHT + 40, at)], colour, dash, width),
                f'<text x="{WIDTH - RIGHT + 46}" y="{at + 4}">{label}</text>']

    for points in reference.values():
        parts.append(polyline([(x(a), y(b)) for a, b in points], "#aaa", "2,3", 1))
    for row, ((job, workers), (colour, dash)) in enumerate(STYLE.items()):
        points = series[(job, workers)]
        parts.append(polyline([(x(a), y(b)) for a, b in points], colour, dash))
        parts += [f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="3" fill="{colour}"/>' for a, b in points]
        parts += legend(row, colour, dash, f"{job}, {workers} worker{'s' if workers != '1' else ''}")
    parts += legend(len(STYLE), "#aaa", "2,3", "linear in clicks", 1)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="+", help="worker_scaling JSON documents, one per size")
    parser.add_argument("--out", required=True, help="the SVG file to write")
    args = parser.parse_args(argv)
    results = [json.loads(Path(p).read_text()) for p in args.results]
    Path(args.out).write_text(svg(results))
    print(json.dumps({"plot": args.out, "sizes": sorted(r["clicks"] for r in results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

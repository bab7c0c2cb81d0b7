#!/usr/bin/env python3
"""The curve that bounds the mini targets: quality against the CPU seconds of training, per operating point.

Reads JSON lines of measured operating points (``local/operating_points.jsonl``: recipe, point, steps, cpu_s,
score, date; the enh1 scores are CLIPSep-NIT text SDRi in dB from ``local/operating_point.py`` or the recipe,
the tts1 scores ZS relevance in %) and draws one panel per recipe with the issue's target and the CPU budget
one training gets in the default run; each point is numbered as in the Markdown table it prints, and the
points of one operating point at several step counts are joined.

Example:
    python local/plot_operating_points.py --points local/operating_points.jsonl --output operating_points.png
"""

import argparse
import json
import sys
from pathlib import Path

# recipe -> (target, its unit, CPU seconds one training gets in the default run on 2 cores)
TARGETS = {"enh1": (6.0, "CLIPSep-NIT text SDRi (dB)", 600.0), "tts1": (50.0, "CLIPSonic-ZS relevance (%)", 400.0)}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python local/plot_operating_points.py",
        description="Plot measured mini operating points (quality vs training CPU seconds) against the targets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--points", type=Path, default=Path("local/operating_points.jsonl"), help="JSON lines")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    return parser


def read_points(path: Path):
    points = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                point = json.loads(line)
                float(point["cpu_s"]), float(point["score"]), point["recipe"], point["point"]
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{lineno}: not an operating point ({type(err).__name__}: {err})") from None
            points.append(point)
    return points


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    try:
        points = read_points(args.points)
    except (OSError, ValueError) as err:
        print(f"plot_operating_points: error: {err}", file=sys.stderr)
        return 2
    from espnet2.enh.clipsep.eval.figures import save_figure

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    recipes = [r for r in TARGETS if any(p["recipe"] == r for p in points)]
    fig, axes = plt.subplots(1, len(recipes), figsize=(6.5 * len(recipes), 4.6), squeeze=False)
    for ax, recipe in zip(axes[0], recipes):
        target, unit, budget = TARGETS[recipe]
        mine = [(i, p) for i, p in enumerate(points, 1) if p["recipe"] == recipe]
        families = {}
        for i, p in mine:
            families.setdefault(p["point"], []).append((float(p["cpu_s"]), float(p["score"]), i))
        for k, (name, pts) in enumerate(families.items()):
            pts.sort()
            ax.plot([x for x, _, _ in pts], [y for _, y, _ in pts], marker="o", color=f"C{k % 10}")
            for x, y, i in pts:
                ax.annotate(str(i), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(target, color="k", linestyle="--", linewidth=1, label=f"target {target:g}")
        ax.axvline(budget, color="gray", linestyle=":", linewidth=1.5, label=f"one training's CPU budget ({budget:g} s)")
        ax.set_xlim(0, max(budget, max(float(p["cpu_s"]) for _, p in mine)) * 1.1)
        ax.set_ylim(0, target * 1.1)
        ax.set_title(f"{recipe}: quality against training CPU time", fontsize=10)
        ax.set_xlabel("training CPU seconds", fontsize=9)
        ax.set_ylabel(unit, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    save_figure(fig, args.output)
    print("| # | recipe | operating point | steps | CPU s | score | date |\n|---|---|---|---|---|---|---|")
    for i, p in enumerate(points, 1):
        est = " (est.)" if p.get("estimated") else ""
        print(f"| {i} | {p['recipe']} | {p['point']} | {p['steps']} | {p['cpu_s']}{est} | {p['score']} | {p['date']} |")
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

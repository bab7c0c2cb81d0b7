"""Open report pages in headless Chromium: broken images, players that cannot load, console errors.

Example (after ``./run.sh`` in egs2/clipsep/enh1):
    python -m espnet2.enh.clipsep.bin.check_page exp/mini/report_test/index.html --screenshot exp/mini/report_test.png

Exit status 0 when every page is clean, 1 when a page has a problem (one line each), 2 when nothing could run.
"""

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.check_page",
        description="Load report pages in the system's Chromium (headless, through Playwright) and check them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("pages", nargs="+", type=Path, help="HTML pages (index.html)")
    parser.add_argument("--screenshot", type=Path, action="append", default=[],
                        help="full-page PNG per page, in the pages' order")
    parser.add_argument("--browser", default=None, help="Chromium executable (default: $CHROMIUM, else on PATH)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for a page and its media to load")
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    from espnet2.enh.clipsep.eval.browser import check_page

    if args.screenshot and len(args.screenshot) != len(args.pages):
        print(f"check_page: error: {len(args.screenshot)} --screenshot for {len(args.pages)} pages", file=sys.stderr)
        return 2
    failed = 0
    for i, page in enumerate(args.pages):
        try:
            found = check_page(page, args.screenshot[i] if args.screenshot else None, args.browser, args.timeout)
        except (FileNotFoundError, RuntimeError) as err:
            print(f"check_page: error: {err}", file=sys.stderr)
            return 2
        shot = f"; screenshot {found.screenshot}" if found.screenshot else ""
        print(f"{page}: {found.images} images, {found.audios} players, {len(found.problems)} problems{shot}")
        for problem in found.problems:
            print(f"error: {page}: {problem}", file=sys.stderr)
        failed += not found.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

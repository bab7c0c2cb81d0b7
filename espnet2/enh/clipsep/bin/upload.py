"""Upload a packed model to the Hugging Face hub with a model card, as ESPnet recipes share theirs.

The repo gets the unpacked pack (``meta.yaml``, config, weights, the packed CLIP) and a ``README.md`` model card
(how to use it, the model's settings, the recipe's results table). It then loads by name anywhere:
``separate --model USER/NAME`` or ``Separator.from_pretrained("USER/NAME")``. Needs a hub token
(``huggingface-cli login`` or ``HF_TOKEN``); ``--stage_dir DIR`` writes what would be uploaded and stops.

Example:
    python -m espnet2.enh.clipsep.bin.upload --pack exp/mini/enh_clipsep_nit/packed.zip --hf_repo you/clipsep-mini \\
        --results RESULTS.md
"""

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.upload",
        description="Upload a packed CLIPSep model and its model card to a Hugging Face hub repo.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--pack", type=Path, required=True, help="packed.zip of espnet2.enh.clipsep.bin.pack")
    parser.add_argument("--hf_repo", required=True, help="USER/NAME on the hub (created if missing)")
    parser.add_argument("--results", type=Path, default=None, help="the recipe's RESULTS.md (its table goes into the card)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--stage_dir", type=Path, default=None, help="write the repo's files here and upload nothing")
    return parser


def main(cmd: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(cmd)
    from espnet2.enh.clipsep.files.hub import stage_and_upload, stage_repo

    if args.hf_repo.count("/") != 1 or not all(args.hf_repo.split("/")):
        print(f"upload: error: --hf_repo {args.hf_repo!r}: expected USER/NAME", file=sys.stderr)
        return 2
    try:
        if args.stage_dir is not None:
            stage_repo(args.pack, args.hf_repo, args.stage_dir, args.results)
            print(f"upload: staged {args.hf_repo} in {args.stage_dir} (nothing uploaded)")
            return 0
        url = stage_and_upload(args.pack, args.hf_repo, args.results, args.private)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"upload: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # the hub's own errors: no token, no network, no permission
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"upload: error: {args.hf_repo}: {type(err).__name__}: {first}", file=sys.stderr)
        return 1
    print(f"upload: {args.hf_repo}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

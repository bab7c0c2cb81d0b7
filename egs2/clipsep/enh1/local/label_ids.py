"""Label-id queries for the LabelSep baseline: ``utt2label`` files -> ``label.scp`` of int64 npy ids.

LabelSep replaces CLIP with a learned embedding per class, so it trains with labels (it is the supervised
baseline of CLIPSep). The label list is made from the first ``--utt2label`` file (sorted unique labels) unless
``--label_list`` already exists; every later file must only use labels from it.

Example:
    python local/label_ids.py --label_list dump/labels/label_list.txt \\
        --utt2label data/train/utt2label --output_dir dump/labels/train \\
        --utt2label data/test/utt2label --output_dir dump/labels/test
"""

import argparse
import os
import sys
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python local/label_ids.py",
        description="Write label-id queries (npy scp) for LabelSep from utt2label files.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--label_list", type=Path, required=True, help="one label per line; id = line number")
    parser.add_argument("--utt2label", type=Path, action="append", required=True, help="'<uttid> <label>' file")
    parser.add_argument("--output_dir", type=Path, action="append", required=True, help="one per --utt2label")
    return parser


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    try:
        import numpy as np

        from espnet2.enh.clipsep.files.kaldi_table import read_table, write_table_atomic

        if len(args.utt2label) != len(args.output_dir):
            raise ValueError("give one --output_dir per --utt2label")
        tables = [read_table(p) for p in args.utt2label]
        if args.label_list.is_file():
            labels = [line.rstrip("\n") for line in args.label_list.open(encoding="utf-8") if line.strip()]
        else:
            labels = sorted(set(tables[0].values()))
            args.label_list.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.label_list.with_name(args.label_list.name + ".tmp")
            tmp.write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")
            os.replace(tmp, args.label_list)
        ids = {label: i for i, label in enumerate(labels)}
        for path, table, out in zip(args.utt2label, tables, args.output_dir):
            unknown = sorted(set(table.values()) - set(ids))
            if unknown:
                raise ValueError(f"{path}: label {unknown[0]!r} is not in {args.label_list}")
            (out / "data").mkdir(parents=True, exist_ok=True)
            scp = {}
            for key, label in table.items():
                npy = out / "data" / f"{key}.npy"
                tmp = npy.with_name(npy.name + ".tmp")
                with open(tmp, "wb") as f:
                    np.save(f, np.array([ids[label]], dtype=np.int64))
                os.replace(tmp, npy)
                scp[key] = str(npy.resolve())
            write_table_atomic(out / "label.scp", scp)
        print(f"label_ids: {len(labels)} labels in {args.label_list}", file=sys.stderr)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"label_ids: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

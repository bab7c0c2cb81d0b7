"""Separate any recording by a text or image query: one output file per query and input.

A thin command line over :class:`espnet2.enh.clipsep.separate.Separator`. MODEL is a packed zip
(``espnet2.bin.pack``), an experiment directory, an ``espnet_model_zoo`` tag or the released CLIPSep checkpoint.
Inputs of any format, rate, channel count and length; outputs ``<output_dir>/<stem>_<query>.wav`` at the
model's rate (``_without_<query>`` with ``--remove``). Each bad input prints one ``error: <file>: <problem>``
line and leaves no output; the other inputs are still separated (exit status 1; 2 when nothing could start).

Examples:
    python -m espnet2.enh.clipsep.bin.separate --model packed.zip --query "dog barking" in.wav more.wav -o out
    python -m espnet2.enh.clipsep.bin.separate --model packed.zip --query speech --remove noisy.flac -o out
    python -m espnet2.enh.clipsep.bin.separate --model exp/nit --image frame.jpg in.wav -o out
"""

import argparse
import contextlib
import io
import logging
import sys
import warnings
from pathlib import Path


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m espnet2.enh.clipsep.bin.separate",
        description="Separate audio files by text or image queries with a trained CLIPSep model "
        "(long inputs in cross-faded chunks).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, help="audio files (any format soundfile or ffmpeg reads)")
    parser.add_argument("--model", required=True, help="packed zip, experiment dir, checkpoint, hub repo USER/NAME, "
                        "espnet_model_zoo tag, or the released model's short name clipsep-nit-vggsound")
    parser.add_argument("-o", "--output_dir", type=Path, required=True, help="where the separated files go")
    parser.add_argument("--query", action="append", default=[], help="text query (repeatable: one output each)")
    parser.add_argument(
        "--image", action="append", default=[], type=Path,
        help="image query: a picture, or a video (3 frames at 1 fps around its middle); repeatable",
    )
    parser.add_argument("--remove", action="store_true", help="output everything but each query")
    parser.add_argument("--per_channel", action="store_true", help="separate each channel (else the down-mix)")
    parser.add_argument("--keep_input_rate", action="store_true", help="write at the input's rate, not the model's")
    parser.add_argument("--chunk_seconds", type=float, default=8.0, help="chunk length for long inputs (0: one pass)")
    parser.add_argument("--overlap_seconds", type=float, default=1.0, help="cross-faded overlap of chunks")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--clip_model", default=None, help="open_clip model of the queries (default: see --help)")
    parser.add_argument(
        "--clip_pretrained", default=None,
        help="open_clip tag or weights file; default: what the recipe fitted beside the experiment, else "
        "ViT-B-32/openai for 512-d queries",
    )
    parser.add_argument("--cache_dir", type=Path, default=None, help="espnet_model_zoo cache (its default)")
    parser.add_argument("--mask_type", default=None, choices=("soft", "binary"), help="override the model's")
    parser.add_argument("--mask_threshold", type=float, default=None, help="override for binary masks")
    parser.add_argument("--format", default="wav", choices=("wav", "flac"), help="wav: 32-bit float; flac: 24-bit")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--log_level", default="WARNING", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars (errors and warnings still print)")
    return parser


def _say(line: str) -> None:
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


class AudioBar:
    """One tqdm bar per input file, in seconds of audio separated (a long file advances block by block).

    Drawn from the first ``progress`` call, when the file has been checked and its duration is known.
    """

    def __init__(self, path: Path, leave: bool, disable):
        self.name, self.leave, self.disable, self.bar = path.name, leave, disable, None

    def progress(self, done: float, total: float) -> None:
        from tqdm import tqdm

        if self.bar is None:
            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}]"
            self.bar = tqdm(total=total, desc=self.name, bar_format=fmt, leave=self.leave, disable=self.disable,
                            file=sys.stderr)  # fmt: skip
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _import_quietly():
    """Import the separator module; ESPnet's import prints unrelated noise (nltk downloads, flash-attn)."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        import espnet2.enh.clipsep.task  # noqa: F401
    from espnet2.enh.clipsep import separate

    return separate


def main(cmd=None) -> int:
    args = get_parser().parse_args(cmd)
    logging.basicConfig(level=args.log_level, format="%(levelname)s: %(message)s")
    separate = _import_quietly()
    from tqdm import tqdm

    from espnet2.enh.clipsep.files.writing import check_output_dir

    def show(message, category, filename, lineno, file=None, line=None):
        _say(f"warning: {message}")

    errors = (separate.CLIPSepError, ValueError, FileNotFoundError, RuntimeError, OSError)
    with warnings.catch_warnings():
        warnings.simplefilter("always", separate.SeparationWarning)
        warnings.showwarning = show
        try:
            import torch

            if args.num_threads > 0:
                torch.set_num_threads(args.num_threads)
            sep = separate.Separator.from_pretrained(
                args.model, clip_model=args.clip_model, clip_pretrained=args.clip_pretrained, device=args.device,
                cache_dir=args.cache_dir, chunk_seconds=args.chunk_seconds or None,
                overlap_seconds=args.overlap_seconds, mask_type=args.mask_type, mask_threshold=args.mask_threshold,
            )  # fmt: skip
            queries = sep.encode_queries(args.query, args.image)
            check_output_dir(args.output_dir)
        except errors as err:
            _say(f"error: {err}")
            return 2
        failed, stems = 0, {}
        many = len(args.inputs) > 1
        for path in tqdm(args.inputs, desc="separate", unit="file", disable=True if args.quiet or not many else None):
            if path.stem in stems:  # would write (or with --overwrite, replace) the same output files
                _say(f"error: {path}: same output names as {stems[path.stem]} (separate them into different -o dirs)")
                failed += 1
                continue
            stems[path.stem] = path
            bar = AudioBar(path, leave=not many, disable=True if args.quiet else None)
            try:
                outs = sep.separate_file(
                    path, args.output_dir, remove=args.remove, per_channel=args.per_channel,
                    keep_input_rate=args.keep_input_rate, overwrite=args.overwrite, audio_format=args.format,
                    queries=queries, progress=bar.progress,
                )  # fmt: skip
                logging.info("%s -> %s", path, ", ".join(str(p) for p in outs))
            except errors as err:
                # Our errors name their file; anything else (e.g. out of memory) gets the input's name.
                named = isinstance(err, separate.CLIPSepError) or str(err).startswith(str(path))
                _say(f"error: {err}" if named else f"error: {path}: {type(err).__name__}: {err}")
                failed += 1
            finally:
                bar.close()
    if failed and len(args.inputs) > 1:
        _say(f"separate: {failed} of {len(args.inputs)} inputs failed (see above); the others were separated")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Train a CLIPSonic generator: ``espnet2.bin.tts_train`` with our classes registered.

Usage: ``python -m espnet2.tts_diff.bin.train --config conf/tuning/train_clipsonic.yaml ...`` (``--help`` lists
every option; they are those of ``espnet2.bin.tts_train``).
"""

from espnet2.tts_diff.task import TTSDiffTask


def main(cmd=None):
    TTSDiffTask.main(cmd=cmd)


if __name__ == "__main__":
    main()

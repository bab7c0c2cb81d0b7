"""Train a CLIPSep model: ``espnet2.bin.enh_train`` with query data names and our model class.

Usage: ``python -m espnet2.enh.clipsep.bin.train --config conf/train_clipsep.yaml ...`` (``--help`` lists
every option; they are those of ``espnet2.bin.enh_train``).
"""

from espnet2.enh.clipsep.task import CLIPSepTask


def main(cmd=None):
    CLIPSepTask.main(cmd=cmd)


if __name__ == "__main__":
    main()

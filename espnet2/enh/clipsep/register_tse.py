"""The one place that adds our classes to ESPnet's target-speaker-extraction task (``espnet2.tasks.enh_tse``).

Runs right after that module is imported (``espnet_clipsep_hook``). The TSE task shares the enhancement task's
encoder, decoder, criterion and wrapper choices (it imports them from ``espnet2.tasks.enh``, whose own
registration, :mod:`espnet2.enh.clipsep.register`, runs first); only the extractor is its own.
"""

from espnet2.enh.clipsep.register import add_to_choices, load_class

__all__ = ["register"]

EXTRACTORS = {"clipsep": "espnet2.enh.clipsep.extractor.clipsep_extractor:CLIPSepExtractor"}
BASE = "espnet2.enh.extractor.abs_extractor:AbsExtractor"


def register() -> None:
    """Add ``extractor: clipsep`` to ``espnet2.tasks.enh_tse``."""
    from espnet2.tasks import enh_tse

    for name, path in EXTRACTORS.items():
        add_to_choices(enh_tse.extractor_choices, name, load_class(path), load_class(BASE))

"""``CLIPSepTask``: ESPnet's enhancement task with query data names, on-the-fly mixing and our model class.

Importing this module registers our classes (spawned multi-GPU workers re-import it when they unpickle
``CLIPSepTask.main_worker``). Train with ``python -m espnet2.enh.clipsep.bin.train`` (same options as
``espnet2.bin.enh_train``).
"""

import argparse
from typing import Callable, Collection, Dict, List, Optional, Tuple

import numpy as np
import torch
from espnet2.tasks.enh import EnhancementTask
from espnet2.train.collate_fn import CommonCollateFn
from typeguard import typechecked

from espnet2.enh.clipsep.model import CLIPSepEnhancementModel
from espnet2.enh.clipsep.preprocessor import CLIPSepMixPreprocessor
from espnet2.enh.clipsep.register import register

__all__ = ["MAX_QUERIES", "CLIPSepTask", "query_data_names"]

register()

MAX_QUERIES = 10


def query_data_names() -> Tuple[str, ...]:
    """``query1..`` and ``text_query1..``: per-source query embeddings (npy / kaldi_ark) or label ids."""
    return tuple(f"{p}{n}" for p in ("query", "text_query") for n in range(1, MAX_QUERIES + 1))


class CLIPSepTask(EnhancementTask):
    @classmethod
    def optional_data_names(cls, train: bool = True, inference: bool = False) -> Tuple[str, ...]:
        return super().optional_data_names(train, inference) + query_data_names()

    @classmethod
    @typechecked
    def build_collate_fn(cls, args: argparse.Namespace, train: bool) -> Callable[
        [Collection[Tuple[str, Dict[str, np.ndarray]]]], Tuple[List[str], Dict[str, torch.Tensor]]
    ]:
        # A query is one vector per example, not a sequence: no padding, no `_lengths` entry.
        return CommonCollateFn(float_pad_value=0.0, int_pad_value=0, not_sequence=query_data_names())

    @classmethod
    @typechecked
    def build_preprocess_fn(
        cls, args: argparse.Namespace, train: bool
    ) -> Optional[Callable[[str, Dict[str, np.array]], Dict[str, np.ndarray]]]:
        if getattr(args, "preprocessor", None) != "clipsep_mix":
            return super().build_preprocess_fn(args, train)
        conf = dict(getattr(args, "preprocessor_conf", None) or {})
        if train:
            # Partners are drawn from the training lists themselves: <ref_prefix>1 (audio), <query_prefix>1.
            entries = {name: (path, kind) for path, name, kind in args.train_data_path_and_name_and_type}
            ref = conf.get("ref_prefix", "speech_ref") + "1"
            query = conf.get("query_prefix", "query") + "1"
            for name in (ref, query):
                if name not in entries:
                    raise ValueError(f"preprocessor clipsep_mix: --train_data_path_and_name_and_type has no '{name}'")
            conf.setdefault("source_scp", entries[ref][0])
            conf.setdefault("query_scp", entries[query][0])
            conf.setdefault("query_type", entries[query][1])
            if "text_" + query in entries:
                conf.setdefault("text_query_scp", entries["text_" + query][0])
                conf.setdefault("text_query_type", entries["text_" + query][1])
        return CLIPSepMixPreprocessor(train=train, **conf)

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace) -> CLIPSepEnhancementModel:
        if getattr(args, "diffusion_model", None) is not None:
            raise ValueError("CLIPSepTask builds mask separators; --diffusion_model is not supported")
        # Let ESPnet build (and --init) the parts, then wrap them in the query-forwarding model.
        base = super().build_model(args)
        return CLIPSepEnhancementModel(
            encoder=base.encoder,
            separator=base.separator,
            decoder=base.decoder,
            mask_module=base.mask_module,
            loss_wrappers=list(base.loss_wrappers) if base.loss_wrappers is not None else None,
            **args.model_conf,
        )

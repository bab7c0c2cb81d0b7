"""BERT text-query encoder of BERTSep, the CLIPSep baseline whose query model is a BERT encoder.

BERTSep "replaces the CLIP model in CLIPSep with a BERT encoder": a source's query is the BERT embedding of its
label text, in training and at test time alike, and goes through the same query projection (linear, sigmoid)
as a CLIP embedding. The released code (sony/CLIPSep ``clipsep/clipsep.py``, class ``BERTSep``; ``train.py``
``--bert_embeddings``) reads those embeddings from a precomputed ``{label: (1, D) tensor}`` file, one entry
per label, and does not ship the script that made it. Its projection ``nn.Linear(256, channels)`` says that
file held 256-d vectors, which ``bert-base-uncased`` (hidden size 768) does not give. What the released code
leaves open is decided here, and each choice is a constructor argument:

* model: ``bert-base-uncased`` (12 layers, hidden size 768) from a *local* directory in the Hugging Face
  layout, as this project's issue asks; any BERT directory works (the embedding size is its ``hidden_size``:
  a BERT 256 wide would match the released code's projection).
* text: the label itself (the released embeddings are keyed by label), no prompt template: CLIP's
  "a photo of ..." prompts fit an image-caption model, not BERT. Templates can be given (mean over them).
  The tokenizer lower-cases as the uncased model was trained.
* pooling: ``cls`` (default), the final hidden state of [CLS], BERT's sequence representation ``C``;
  ``pooler``, that state through BERT's next-sentence-trained dense + tanh layer (transformers'
  ``pooler_output``); ``mean``, the mean of the final hidden states of the non-padding tokens.
* no normalisation: the released BERTSep feeds the stored vectors to its linear layer as they are (CLIPSep's
  CLIP embeddings are raw too, :mod:`espnet2.enh.clipsep.clip.encoder`).

The weights are read with ``transformers`` (``BertModel``, ``BertTokenizer``), imported only when the model is
first used: ESPnet imports ``transformers`` at start-up whenever it is importable (about 7 s more for every
ESPnet process), so it lives in a directory of its own (``tools/install.sh``; its path is in
``.venv/clap-pythonpath``) that goes on ``PYTHONPATH`` only for ``embed --text_encoder bert``. Like the CLIP
encoder, this is a plain object (never part of a trained model's ``state_dict``) and training never runs it.

Reference:
    H.-W. Dong et al., "CLIPSep: Learning Text-queried Sound Separation with Noisy Unlabeled Videos",
    ICLR 2023 (§4.2, Table 3: BERTSep). J. Devlin et al., "BERT: Pre-training of Deep Bidirectional
    Transformers for Language Understanding", NAACL 2019 (§3: the final hidden vector of [CLS], C, as the
    aggregate sequence representation).
"""

import json
import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from typeguard import typechecked

from espnet2.enh.clipsep.errors import CLIPSepError, first_line
from espnet2.enh.clipsep.prompts import template_prompts

BERT_REPO = "google-bert/bert-base-uncased"  # "bert-base-uncased" on the hub
BERT_DOWNLOAD = (
    f"download bert-base-uncased from the Hugging Face hub there: hf download {BERT_REPO} config.json "
    "vocab.txt tokenizer.json tokenizer_config.json model.safetensors --local-dir {dir} (about 440 MB)"
)
TRANSFORMERS_PIN = "transformers==5.25.0 tokenizers==0.23.3"  # tools/requirements-clap.txt
POOLINGS = ("cls", "pooler", "mean")
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)  # fmt: skip
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")

__all__ = ["BERTQueryEncoder", "POOLINGS", "check_bert_dir", "import_transformers", "pool_hidden"]


def import_transformers():
    """The ``transformers`` module, or an ImportError of one line that says how to install it."""
    try:
        import transformers
        from transformers import BertModel, BertTokenizer  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"BERT query embeddings need transformers, which is not importable ({err}): run tools/install.sh "
            "and put the directory named in .venv/clap-pythonpath on PYTHONPATH for this command "
            f"(PYTHONPATH=$(cat .venv/clap-pythonpath)), or pip install --target DIR --no-deps {TRANSFORMERS_PIN} "
            "and put DIR there (not into the main environment: ESPnet would import it in every process, ~7 s)"
        ) from None
    return transformers


def check_bert_dir(model_dir: Union[str, os.PathLike]) -> dict:
    """The ``config.json`` of a local BERT directory, after checking that its files are there.

    Args:
        model_dir: Directory in the Hugging Face layout: ``config.json``, the weights (``model.safetensors``
            or ``pytorch_model.bin``) and the tokenizer (``vocab.txt`` or ``tokenizer.json``).

    Raises:
        FileNotFoundError: No such directory, or a file is missing; the message says what to download.
        CLIPSepError: ``config.json`` is unreadable or not a BERT model's.
    """
    path = Path(model_dir)
    how = BERT_DOWNLOAD.format(dir=path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: BERT model directory not found; {how}")
    needed = {"config.json": ("config.json",), "model.safetensors or pytorch_model.bin": WEIGHT_FILES,
              "vocab.txt or tokenizer.json": TOKENIZER_FILES}  # fmt: skip
    missing = [what for what, names in needed.items() if not any((path / n).is_file() for n in names)]
    if missing:
        raise FileNotFoundError(f"{path}: no {', no '.join(missing)} in the BERT model directory; {how}")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CLIPSepError(f"{path / 'config.json'}: unreadable ({first_line(err)})") from None
    if not isinstance(config, dict) or config.get("model_type") != "bert":
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise CLIPSepError(f"{path / 'config.json'}: model_type {kind!r}, not a BERT model ('bert'); {how}")
    return config


def pool_hidden(
    last_hidden_state: torch.Tensor,
    attention_mask: torch.Tensor,
    pooler_output: Optional[torch.Tensor],
    pooling: str,
) -> torch.Tensor:
    """One vector per sequence from BERT's outputs.

    Args:
        last_hidden_state: Final-layer hidden states ``(B, L, D)``.
        attention_mask: ``(B, L)``, 1 for tokens, 0 for padding.
        pooler_output: BERT's pooler output ``(B, D)`` (needed for ``pooler`` only).
        pooling: ``cls`` (row of [CLS], the first token), ``pooler`` or ``mean`` (over non-padding tokens).

    Returns:
        ``(B, D)`` float32.
    """
    if pooling == "cls":
        out = last_hidden_state[:, 0]
    elif pooling == "pooler":
        if pooler_output is None:
            raise ValueError("pooling 'pooler' needs BERT's pooler_output (a model with its pooling layer)")
        out = pooler_output
    elif pooling == "mean":
        mask = attention_mask.to(last_hidden_state.dtype).unsqueeze(-1)
        out = (last_hidden_state * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    else:
        raise ValueError(f"unknown pooling {pooling!r} (one of {', '.join(POOLINGS)})")
    return out.float()


class BERTQueryEncoder:
    """Encode label texts with a frozen local BERT (BERTSep's query model).

    Args:
        model_dir: Local BERT directory in the Hugging Face layout (``bert-base-uncased`` for BERTSep):
            ``config.json``, ``model.safetensors`` (or ``pytorch_model.bin``), ``vocab.txt`` (and/or
            ``tokenizer.json``, ``tokenizer_config.json``). Read offline (``local_files_only``).
        pooling: ``cls``, ``pooler`` or ``mean`` (see :func:`pool_hidden`).
        device: ``cpu``, ``cuda[:n]`` or ``auto`` (CUDA when available).
        batch_size: Prompts encoded per forward pass.
        templates: Prompt templates with one ``{}``; a query is the mean over them (default: the text as is).

    Raises:
        FileNotFoundError: ``model_dir`` or one of its files is missing (the message says what to download).
        CLIPSepError: ``config.json`` is not a BERT model's, or a bad option.
    """

    @typechecked
    def __init__(
        self,
        model_dir: Union[str, os.PathLike],
        pooling: str = "cls",
        device: str = "auto",
        batch_size: int = 64,
        templates: Sequence[str] = ("{}",),
    ):
        if pooling not in POOLINGS:
            raise CLIPSepError(f"pooling: unknown {pooling!r} (one of {', '.join(POOLINGS)})")
        if batch_size < 1:
            raise CLIPSepError(f"batch_size: must be >= 1, got {batch_size}")
        if isinstance(templates, str) or not templates:
            raise CLIPSepError("templates: at least one prompt template is needed (a sequence of strings)")
        for t in templates:
            if t.count("{}") != 1:
                raise CLIPSepError(f"templates: a prompt template must contain exactly one '{{}}': {t!r}")
        self.model_dir = Path(model_dir)
        self.config = check_bert_dir(self.model_dir)
        self.pooling = pooling
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
        self.batch_size = batch_size
        self.templates = tuple(templates)
        self._model = None
        self._tokenizer = None

    @property
    def embed_dim(self) -> int:
        """Dimension of the query vectors: the model's hidden size (768 for bert-base-uncased)."""
        return int(self.config["hidden_size"])

    @property
    def model(self) -> torch.nn.Module:
        """The frozen ``BertModel`` (loaded on first access)."""
        if self._model is None:
            self._build()
        return self._model

    @property
    def tokenizer(self):
        """The model's ``BertTokenizer`` (loaded with the model)."""
        if self._tokenizer is None:
            self._build()
        return self._tokenizer

    def _build(self) -> None:
        transformers = import_transformers()
        # Weights only from this directory, no hub kernels (transformers 5 asks for the `kernels` package).
        extra = {"use_kernels": False} if int(transformers.__version__.split(".")[0]) >= 5 else {}
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its load report; ours below is one line
        transformers.logging.disable_progress_bar()
        try:
            model, info = transformers.BertModel.from_pretrained(
                self.model_dir, local_files_only=True, output_loading_info=True, **extra
            )
            tokenizer = transformers.BertTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        except Exception as err:  # corrupt files raise anything (e.g. safetensors' own SafetensorError)
            raise CLIPSepError(
                f"{self.model_dir}: not a loadable BERT model directory ({type(err).__name__}: {first_line(err)})"
            ) from err
        finally:
            transformers.logging.set_verbosity(verbosity)
            transformers.logging.enable_progress_bar()
        # A parameter the checkpoint lacks would be randomly initialised: refuse, except the pooling layer
        # when it is not used (a checkpoint saved without it).
        missing = sorted(k for k in info["missing_keys"] if self.pooling == "pooler" or not k.startswith("pooler."))
        if missing:
            raise CLIPSepError(
                f"{self.model_dir}: the weights lack {len(missing)} BERT parameters (e.g. {missing[0]}); "
                + BERT_DOWNLOAD.format(dir=self.model_dir)
            )
        self._model = model.to(self.device).eval().requires_grad_(False)
        self._tokenizer = tokenizer
        logging.info(
            "BERT %s on %s: %d layers, hidden size %d, %s pooling",
            self.model_dir, self.device, self.config.get("num_hidden_layers", -1), self.embed_dim, self.pooling,
        )

    @property
    def max_length(self) -> int:
        """Tokens BERT reads per prompt, [CLS] and [SEP] included (longer prompts are truncated)."""
        limit = int(self.config.get("max_position_embeddings", 512))
        tok_limit = getattr(self.tokenizer, "model_max_length", None)
        return min(limit, int(tok_limit)) if tok_limit else limit

    @torch.no_grad()
    def encode_text(self, queries: Sequence[str], templates: Optional[Sequence[str]] = None) -> torch.Tensor:
        """BERT embeddings of query texts.

        Args:
            queries: N query strings, e.g. ``["dog barking", "violin"]`` (stripped of surrounding spaces).
            templates: Prompt templates (the encoder's when None); a query is the mean over them.

        Returns:
            Tensor ``(N, D)`` (float32, CPU), ``D`` = :attr:`embed_dim`. A text's vector does not depend on the
            other texts of its batch (padding is masked).
        """
        templates = self.templates if templates is None else tuple(templates)
        prompts = template_prompts(queries, templates)
        if not queries:
            return torch.zeros(0, self.embed_dim)
        model, tokenizer = self.model, self.tokenizer
        outs = []
        for i in range(0, len(prompts), self.batch_size):
            tokens = tokenizer(
                prompts[i : i + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            out = model(**tokens)
            pooled = pool_hidden(out.last_hidden_state, tokens["attention_mask"], out.pooler_output, self.pooling)
            outs.append(pooled.cpu())
        return torch.cat(outs).view(len(queries), len(templates), -1).mean(dim=1)

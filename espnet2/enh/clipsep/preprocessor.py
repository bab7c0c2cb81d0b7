"""On-the-fly CLIPSep training mixtures: two clips, random gains, queries travel with their sources.

Training data list one source clip per example (``speech_ref1``: its audio; ``query1``: its CLIP image
embedding, per frame ``(F, D)`` or one vector ``(D,)``, or, for SOP, its frames ``(F, H, W, 3)`` uint8). For
each example this preprocessor draws partner clips at random from the same lists, picks a random centre frame
per clip, crops ``segment`` samples of audio around it, averages the ``num_frames`` frame embeddings around it
into that source's query (frames are stacked instead: ``(num_frames, H, W, 3)``, indices clamped to the clip),
scales each source by a gain drawn from ``gain_range`` divided by the number of sources, and sums them into
``speech_mix``. Labels are never read. Validation and test data are fixed mixtures and pass through unchanged
(a per-frame query is reduced to its centre frames, so per-frame scp files work there too; a frames array to
its ``num_frames`` middle frames, stacked).

Stacked frames leave as float32 pixel values in [0, 255]: ESPnet's dataset casts float and signed-int arrays
only and refuses uint8.

Reference:
    H.-W. Dong, N. Takahashi, Y. Mitsufuji, J. McAuley, T. Berg-Kirkpatrick, "CLIPSep: Learning
    Text-queried Sound Separation with Noisy Unlabeled Videos", ICLR 2023 (§4: mixtures of two videos,
    gains U(0.5, 1.5), 65,535-sample clips, queries from 3 frames around the clip centre; Appendix C: a random
    centre frame in training, three frames at 1-s intervals around it).
    H. Zhao et al., "The Sound of Pixels", ECCV 2018 (SOP's image network sees the 3 frames themselves).
"""

import random
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import soundfile
from espnet2.fileio.read_text import read_2columns_text
from espnet2.train.dataset import DATA_TYPES
from espnet2.train.preprocessor import AbsPreprocessor
from typeguard import typechecked

from espnet2.enh.clipsep.clip_window import center_frame_mean, crop_around, middle_window

__all__ = ["CLIPSepMixPreprocessor", "center_frame_stack", "is_frames"]


def is_frames(query: np.ndarray) -> bool:
    """Whether a stored query is a clip's frames ``(F, H, W, 3)`` uint8 (SOP), not an embedding or label id."""
    return query.ndim == 4 and query.dtype == np.uint8


def center_frame_stack(frames: np.ndarray, center: int, num_frames: int) -> np.ndarray:
    """``num_frames`` consecutive frames of ``(F, H, W, 3)`` around frame ``center``, stacked, as float32.

    Indices outside ``[0, F)`` are clamped to the first or last frame (so a clip shorter than the window still
    gives ``num_frames`` frames, and every example of a batch the same shape); for an even count the window
    reaches one frame further back than forward, as :func:`center_frame_mean`.

    Returns:
        ``(num_frames, H, W, 3)`` float32 pixel values (the uint8 values, unscaled).
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames query of shape {frames.shape}: expected (F, H, W, 3) RGB frames with F >= 1")
    index = np.clip(np.arange(num_frames) + center - (num_frames - 1) // 2, 0, frames.shape[0] - 1)
    return frames[index].astype(np.float32)


class CLIPSepMixPreprocessor(AbsPreprocessor):
    """Mixes ``num_spk`` random clips per training example and gives each its own query.

    Args:
        train: Training mode (mix on the fly); otherwise pass fixed mixtures through.
        source_scp: Kaldi-style ``wav.scp`` of the training clips the partners are drawn from. The task fills
            it in from the ``speech_ref1`` entry of ``--train_data_path_and_name_and_type`` when None.
        query_scp: scp of the clips' query embeddings (same keys); filled in from the ``query1`` entry.
        query_type: ESPnet data type of ``query_scp`` (``npy`` or ``kaldi_ark``).
        text_query_scp: Optional scp of the clips' text-query embeddings (``text_query{n}``, for
            CLIPSep-Hybrid / -Text); filled in from a ``text_query1`` training entry.
        text_query_type: ESPnet data type of ``text_query_scp``.
        num_spk: Sources per mixture.
        segment: Samples per training source (65,535 in CLIPSep).
        gain_range: Each source is scaled by U(low, high) / num_spk.
        fs: Sample rate of the audio (converts frame index to sample).
        fps: Frame rate of the per-frame embeddings (frame i is the picture at second i / fps).
        num_frames: Frames averaged around the centre frame into a query (stacked, for a frames query).
        speech_name: Name of the mixture.
        ref_prefix: Prefix of the per-source references (``speech_ref1``...).
        query_prefix: Prefix of the per-source queries (``query1``...).
    """

    @typechecked
    def __init__(
        self,
        train: bool,
        source_scp: Optional[str] = None,
        query_scp: Optional[str] = None,
        query_type: str = "npy",
        text_query_scp: Optional[str] = None,
        text_query_type: str = "npy",
        num_spk: int = 2,
        segment: int = 65535,
        gain_range: Sequence[float] = (0.5, 1.5),
        fs: int = 16000,
        fps: float = 1.0,
        num_frames: int = 3,
        speech_name: str = "speech_mix",
        ref_prefix: str = "speech_ref",
        query_prefix: str = "query",
    ):
        super().__init__(train)
        if num_spk < 1 or segment < 1 or num_frames < 1 or fs < 1 or fps <= 0:
            raise ValueError("num_spk, segment, num_frames, fs and fps must be positive")
        if len(gain_range) != 2 or not 0 <= gain_range[0] <= gain_range[1]:
            raise ValueError(f"gain_range must be [low, high] with 0 <= low <= high, got {list(gain_range)}")
        for kind in (query_type, text_query_type):
            if kind not in DATA_TYPES:
                raise ValueError(f"unknown ESPnet data type {kind!r}")
        self.num_spk = num_spk
        self.segment = segment
        self.gain_range = (float(gain_range[0]), float(gain_range[1]))
        self.fs = fs
        self.fps = fps
        self.num_frames = num_frames
        self.speech_name = speech_name
        self.ref_prefix = ref_prefix
        self.query_prefix = query_prefix
        self.sources: Dict[str, str] = {}
        self.queries = None
        self.text_queries = None
        if train:
            if source_scp is None or query_scp is None:
                raise ValueError("training mixtures need source_scp and query_scp")
            self.sources = dict(read_2columns_text(source_scp))
            self.queries = DATA_TYPES[query_type]["func"](query_scp)
            query_keys = set(read_2columns_text(query_scp))  # (ESPnet's readers answer `in` with True)
            missing = [k for k in self.sources if k not in query_keys]
            if missing:
                raise ValueError(f"{query_scp}: no query for {len(missing)} clips of {source_scp}, e.g. {missing[0]}")
            if text_query_scp is not None:
                self.text_queries = DATA_TYPES[text_query_type]["func"](text_query_scp)
            if len(self.sources) < num_spk:
                raise ValueError(f"{source_scp}: {len(self.sources)} clips, need at least {num_spk} to mix")
        self.keys: List[str] = sorted(self.sources)

    def _source(self, audio: np.ndarray, query: np.ndarray):
        """Random centre frame -> (cropped audio (segment,), query (D,) or frames (num_frames, H, W, 3))."""
        frames = is_frames(query)
        if frames or (query.ndim == 2 and np.issubdtype(query.dtype, np.floating)):
            last = max(min(query.shape[0], int(len(audio) / self.fs * self.fps + 1)) - 1, 0)
            center = random.randint(0, last)
            center_sample = int(round(center / self.fps * self.fs))
        else:
            center = 0
            center_sample = random.randint(0, max(len(audio) - 1, 0))
        piece = crop_around(audio, center_sample, self.segment)
        if frames:
            return piece, center_frame_stack(query, center, self.num_frames)
        q = center_frame_mean(query, center, self.num_frames)
        return piece, q.astype(np.float32) if np.issubdtype(q.dtype, np.floating) else q

    def _load_partner(self, key: str):
        audio, rate = soundfile.read(self.sources[key], dtype="float32", always_2d=True)
        if rate != self.fs:
            raise ValueError(f"{self.sources[key]}: sample rate {rate}, expected {self.fs}")
        text = None if self.text_queries is None else np.asarray(self.text_queries[key], dtype=np.float32)
        return audio.mean(axis=1), np.asarray(self.queries[key]), text

    def __call__(self, uid: str, data: Dict[str, Union[str, np.ndarray]]) -> Dict[str, np.ndarray]:
        if not self.train:
            for n in range(1, 100):
                key = f"{self.query_prefix}{n}"
                if key not in data:
                    break
                q = np.asarray(data[key])
                if is_frames(q):  # the frames around the clip centre, as the cached image queries
                    window = middle_window(q.shape[0], self.num_frames)
                    data[key] = center_frame_stack(q, window.start + (self.num_frames - 1) // 2, self.num_frames)
                elif q.ndim == 2 and np.issubdtype(q.dtype, np.floating):
                    # The same frames as the clip-centre queries that `embed` caches.
                    data[key] = q[middle_window(q.shape[0], self.num_frames)].mean(axis=0).astype(np.float32)
            return data

        first = f"{self.ref_prefix}1"
        if first not in data or f"{self.query_prefix}1" not in data:
            raise ValueError(f"{uid}: training data need '{first}' and '{self.query_prefix}1'")
        audio = np.asarray(data[first], dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        text_name = f"text_{self.query_prefix}1"
        text = np.asarray(data[text_name], dtype=np.float32) if text_name in data else None
        clips = [(audio, np.asarray(data[f"{self.query_prefix}1"]), text)]
        others = [k for k in self.keys if k != uid]
        for key in random.sample(others, self.num_spk - 1):
            clips.append(self._load_partner(key))

        refs, queries = [], []
        for audio, query, _ in clips:
            piece, q = self._source(audio, query)
            gain = random.uniform(*self.gain_range) / self.num_spk
            refs.append((piece * gain).astype(np.float32))
            queries.append(q)
        mix = np.sum(refs, axis=0)
        peak = np.abs(mix).max()
        if peak > 1.0:  # keep the sum a valid waveform; scale the references with it
            mix, refs = mix / peak, [r / peak for r in refs]
        out = {self.speech_name: mix.astype(np.float32)}
        for n, (ref, q) in enumerate(zip(refs, queries), 1):
            out[f"{self.ref_prefix}{n}"] = ref.astype(np.float32)
            out[f"{self.query_prefix}{n}"] = q
        if all(text is not None for _, _, text in clips):
            for n, (_, _, text) in enumerate(clips, 1):
                out[f"text_{self.query_prefix}{n}"] = text.reshape(-1)
        return out

"""``TTSDiffTask``: ESPnet's TTS task with our generators registered at import time.

``TTSTask``'s data contract is kept as is (``text`` + ``speech`` + the CLIP embedding as ``spembs``), so
``collect_stats``, ``global_mvn``, ``Text2Speech`` and ``espnet2.bin.pack tts`` work unchanged. The subclass
exists so that spawned multi-GPU workers, which re-import the module defining the task class when they
unpickle ``TTSDiffTask.main_worker``, register ``--tts clipsonic`` too. Train with
``python -m espnet2.tts_diff.bin.train`` (same options as ``espnet2.bin.tts_train``).
"""

from espnet2.tasks.tts import TTSTask

from espnet2.tts_diff.register import register

register()


class TTSDiffTask(TTSTask):
    """``TTSTask`` whose module registers ``clipsonic`` into ``tts_choices`` on import."""

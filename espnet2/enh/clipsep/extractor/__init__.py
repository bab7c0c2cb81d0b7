"""CLIPSep as a target-sound extractor for ESPnet's target-speaker-extraction task (``extractor: clipsep``)."""

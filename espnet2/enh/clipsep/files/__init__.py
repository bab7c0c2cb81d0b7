"""Files a model or a recipe reads and writes: weights, packs, atomic writes, Kaldi tables."""

"""BERTSep's query encoder: label text through a frozen local BERT (transformers, imported lazily)."""

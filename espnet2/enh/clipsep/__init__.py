"""CLIP-queried sound separation (CLIPSep, CLIPSep-NIT and baselines) for ESPnet's enhancement task."""

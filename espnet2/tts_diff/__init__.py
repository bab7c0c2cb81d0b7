"""CLIP-conditioned mel diffusion (CLIPSonic) for ESPnet's TTS/generation task."""

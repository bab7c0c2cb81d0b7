"""CLIPSep's training losses, laid out as ESPnet's ``enh/loss``: criteria and loss wrappers."""

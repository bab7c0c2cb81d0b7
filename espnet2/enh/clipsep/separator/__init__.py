"""The CLIPSep separator: a U-Net over log-frequency magnitudes whose k masks a query mixes into one."""

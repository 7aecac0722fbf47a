"""What metrics.json holds (torch): likelihood, latent diagnostics, AIS and the gap split of a
trained run."""

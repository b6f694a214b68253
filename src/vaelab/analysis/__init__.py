"""Looking at a trained model: its latent codes, figures, reports and comparisons."""

"""sentitune: fine-tune and benchmark pretrained transformers for sentiment classification."""

__version__ = "0.1.0"

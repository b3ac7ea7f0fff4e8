"""bgad-bench: reproduction suite for BGAD (explicit boundary guided semi-push-pull contrastive learning)."""

__version__ = "0.1.0"

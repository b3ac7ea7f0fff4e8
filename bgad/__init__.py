"""bgad-bench: reproduction suite for BGAD (explicit boundary guided semi-push-pull contrastive learning)."""

__version__ = "0.1.0"

# Bumped whenever a change can move a cell's numbers: part of every cell id, so results of older code
# are never taken as done (the git commit is recorded too, but is not part of the id).
RESULT_VERSION = 1

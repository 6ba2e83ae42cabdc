"""Training and held-out text corpora for subq linearize (see docs/data.md)."""

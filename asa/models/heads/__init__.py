"""Heads on an encoder: the case heads (classification, regression) and the block puzzles' heads."""

"""minigpt: a small, readable GPT training framework."""

__version__ = "0.1.0"

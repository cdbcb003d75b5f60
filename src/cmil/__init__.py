"""cmil: imitation learning from pixels with conservative world models (Kolev et al., L4DC 2024)."""

__version__ = "0.1.0"

"""Protocol definitions, profiles and published numbers, as data files; installed as ``bgad.protocols``."""

"""Data files shipped in the package: the default synonym and typo list (synonyms.txt)."""

"""Fonts embedded in visible signatures (see README.txt for their origin and licence)."""

"""SEDA 2.x archiving: manifests, sealed packages, offline verification, the archive store, As@lae."""

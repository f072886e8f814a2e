"""SEDA archiving: ArchiveTransfer builder, sealed packages, offline verification, As@lae, the archive store.

Modules: ``formats`` (PRONOM ids), ``profile`` (per-flow archiving profiles), ``seda`` (messages and
XSD validation), ``package`` (streaming sealed zip/tar), ``seal`` (CMS seal + RFC 3161 timestamp),
``verify`` (``verify_package``), ``asalae``/``asalae_sim`` (REST client and simulator), ``store``
(built-in archive store), ``steps`` (the ``sae`` step family).
"""

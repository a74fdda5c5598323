"""``raydistill tune``: searches over job fields whose trials share one teacher pass.

Kept import-light: :mod:`raydistill.config` imports :mod:`raydistill.tune.space`.
"""

"""Trust: who published a model. ``oms``: OpenSSF Model Signing (OMS) signatures over a model's sha256s."""

"""creditgov: governance toolkit for credit-decision models."""
__version__ = "0.1.0"

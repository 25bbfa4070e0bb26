"""babymm: small vision-language models on a child-sized word budget."""

__version__ = "0.1.0"

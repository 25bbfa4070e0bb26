"""Data preparation stages: each a CLI with `main(argv)`, idempotent, writing a manifest."""

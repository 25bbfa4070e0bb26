"""Evaluation suite: text benchmarks through lm-eval, multimodal benchmarks, gap metrics."""

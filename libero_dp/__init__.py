"""libero_dp: a reproducible pipeline for fine-tuning RDT-style diffusion policies on LIBERO."""

__version__ = "0.1.0"

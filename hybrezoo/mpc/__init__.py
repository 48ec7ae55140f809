"""Measured private inference: a zoo model as a JAX program (:mod:`.convert`), run under SecretFlow SPU's
two-party protocols (:mod:`.runner`), and the micro-benchmarks that calibrate ``pi_cost(...,
protocol="cheetah")`` (:mod:`.calibrate`).

Nothing here is imported by ``import hybrezoo``, and JAX and SPU are imported only when used: the core
package needs neither. ``pip install -e ".[mpc]"`` installs SPU (which brings its JAX); the converter
alone needs only ``jax[cpu]`` (in the ``dev`` extra, for the tests). See docs/mpc.md.
"""
from .convert import (CircaNotSupportedError, ConvertedModel, MissingExtraError, UnsupportedOpError, check_not_circa,
                      convert, require_jax)

__all__ = ["convert", "ConvertedModel", "UnsupportedOpError", "CircaNotSupportedError", "MissingExtraError",
           "check_not_circa", "require_jax"]

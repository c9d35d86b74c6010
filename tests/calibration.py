"""Static int8 the way every test does it: x86 (or ``backend``) qconfig, prepare, one calibration pass, convert."""
from minicompress import nn, quant


def calibrated_int8(model: nn.Module, x, backend: str = "x86") -> nn.Module:
    """``model`` (fused as the caller wants) with ``backend``'s default qconfig, prepared, calibrated on ``x``
    under ``no_grad``, converted."""
    model.qconfig = quant.get_default_qconfig(backend)
    prepared = quant.prepare(model)
    with nn.no_grad():
        prepared(x)
    return quant.convert(prepared)

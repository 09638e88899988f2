"""edgenas: compiler-aware compression search for transformer LMs on edge devices.

Kept import-light on purpose: ``edgenas.runtime`` must import on a device that
has only numpy and the runtime libraries.
"""

import logging as _logging

__version__ = "0.1.0"

# transformers imports torchao (an ExecuTorch dependency) whenever it is installed; its loader
# warns about CUDA-only kernels a CPU install never has, and torch's pytree about torchao's enums.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)

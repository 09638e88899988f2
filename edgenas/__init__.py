"""edgenas: compiler-aware compression search for transformer LMs on edge devices.

Kept import-light on purpose: ``edgenas.runtime`` must import on a device that
has only numpy and the runtime libraries.
"""

__version__ = "0.1.0"

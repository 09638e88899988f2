"""edgenas.compile: candidate -> a deployable artifact for each backend of the catalog
(.tflite for LiteRT, .onnx for ONNX Runtime, .pte for ExecuTorch; see converters.py).

Import-light: the converters (torch, TensorFlow, tf2onnx, ExecuTorch) load only in
the compile child process.
"""

from edgenas.compile.api import Artifact, compile_artifact
from edgenas.compile.errors import CompileError

__all__ = ["Artifact", "CompileError", "compile_artifact"]

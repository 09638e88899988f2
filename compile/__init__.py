"""edgenas.compile: candidate -> deployable artifacts (.onnx for ONNX Runtime, .tflite for LiteRT).

Import-light: the converters (torch, TensorFlow, tf2onnx) load only in the
compile child process.
"""

from edgenas.compile.api import Artifact, compile_artifact
from edgenas.compile.errors import CompileError

__all__ = ["Artifact", "CompileError", "compile_artifact"]

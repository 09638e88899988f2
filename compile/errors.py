"""The error compile/ raises: a candidate that cannot be compiled, with a one-line reason."""

from edgenas.errors import EdgenasError


class CompileError(EdgenasError):
    """A converter failed, crashed, hung, or was asked for something it cannot do."""


#: the test hook that makes the compile child fail on purpose (crash, hang, ...); read by both sides
FAULT_ENV = "EDGENAS_COMPILE_FAULT"

"""Errors of the isa package, kept apart from the modules that raise them so the command line
can catch them without importing the assembler (and numpy, lark, jinja2) at start-up."""


class ListingError(ValueError):
    """An error in a listing; str() is `file:line: error: message`."""

    def __init__(self, file: str, line: int, message: str):
        super().__init__(f"{file}:{line}: error: {message}")
        self.file, self.line, self.message = file, line, message


class ProgramError(ValueError):
    """A program that breaks a rule of the ISA (isa/check.py, isa/verify). `where` says which
    record is at fault, so the assembler can name its listing line: ("instr", N) the N-th
    instruction of the kernel in program order, ("buffer", NAME), ("token", NAME), ("grid",
    None), or None for the kernel (or launch) being checked."""

    def __init__(self, message: str, where: tuple[str, object] | None = None):
        super().__init__(message)
        self.where = where

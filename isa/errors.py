"""Errors of the isa package, kept apart from the modules that raise them so the command line
can catch them without importing the assembler (and numpy, lark, jinja2) at start-up."""


class ListingError(ValueError):
    """An error in a listing; str() is `file:line: error: message`."""

    def __init__(self, file: str, line: int, message: str):
        super().__init__(f"{file}:{line}: error: {message}")
        self.file, self.line, self.message = file, line, message

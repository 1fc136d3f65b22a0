"""Errors of a simulation that come from its input (a listing a user edited), not from dsc.

Kept in a module of their own so the command line can catch them without importing the
interpreter at start-up."""


class SimulationError(ValueError):
    """The program cannot run as written; str() says which kernel and why."""

"""Warning and error classes used across jsdm.

Every warning jsdm emits derives from :class:`JSDMWarning`, so users can
filter them all at once (``warnings.simplefilter("ignore", jsdm.JSDMWarning)``)
or one kind at a time.
"""


class JSDMWarning(UserWarning):
    """Base class of all warnings issued by jsdm."""


class ConvergenceWarning(JSDMWarning):
    """The optimiser stopped before the scaled gradient was small."""


class HessianWarning(JSDMWarning):
    """The Hessian at the optimum is not negative definite or is near-singular."""


class DataWarning(JSDMWarning):
    """Something about the data was decided for the user (e.g. an empty species)."""


class JSDMError(ValueError):
    """Invalid input: the message names the problem, echoes the value and says what to do."""

"""Packed parameter blocks ("slots"): how one Params array maps to entries of the flat vector.

A term declares its parameters as slots; :class:`jsdm.model.params.Layout` lays the
slots of all terms end to end. Each slot knows its Params field, whether it is a
model or a variational parameter, its scope (which block of the optimiser owns
it), box bounds, and the chain rule from the natural gradient to the packed one.
"""
import numpy as np

SCOPES = ("species", "site", "group", "global")


class Slot:
    """A dense block: ``value.ravel()`` (a scalar when ``shape == ()``).

    Parameters
    ----------
    name : str
        Key in ``Layout.slices`` (unique in a model).
    field : str
        Params attribute holding the natural-form array.
    shape : tuple
        Shape of the natural-form array.
    model : bool
        True for model parameters (reported, in the Hessian's model block),
        False for variational ones.
    scope : {"species", "site", "group", "global"}
        The block that owns the parameter; species- and site-scope arrays have
        the species / sites on their first axis.
    bounds : (float, float), optional
        Box for every entry (packed scale).
    label : (str, list of str), optional
        For variational slots: the block name and the names along the last axis
        used by ``packed_labels`` (e.g. ("lv_mean", ["LV1", "LV2"])); model
        parameters are labelled by their term's ``reported`` rows instead.
    """

    def __init__(self, name, field, shape, *, model, scope, bounds=None, label=None):
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.name, self.field, self.shape = name, field, tuple(shape)
        self.model, self.scope, self.bounds = bool(model), scope, bounds
        self.label = label

    @property
    def size(self):
        return int(np.prod(self.shape)) if self.shape else 1

    def pack(self, value):
        return value.ravel() if self.shape else np.array([value], dtype=float)

    def unpack(self, vec):
        if not self.shape:
            return float(vec[0])
        return vec.reshape(self.shape).copy()

    def pack_grad(self, grad, value):
        return grad.ravel() if self.shape else np.array([grad], dtype=float)

    def entries(self):
        """Index tuple of each packed entry into the natural array (packed order)."""
        if not self.shape:
            return [()]
        return list(np.ndindex(*self.shape))

    def __repr__(self):
        kind = "model" if self.model else "variational"
        return f"{type(self).__name__}({self.name!r}, {self.shape}, {kind}, {self.scope})"


class MaskedSlot(Slot):
    """Only the entries where ``mask`` is True are free (the rest are fixed at 0)."""

    def __init__(self, name, field, mask, **kw):
        super().__init__(name, field, mask.shape, **kw)
        self.mask = np.asarray(mask, dtype=bool)

    @property
    def size(self):
        return int(self.mask.sum())

    def pack(self, value):
        return np.asarray(value)[self.mask]

    def unpack(self, vec):
        out = np.zeros(self.shape)
        out[self.mask] = vec
        return out

    def pack_grad(self, grad, value):
        return np.asarray(grad)[self.mask]

    def entries(self):
        return [tuple(ix) for ix in np.argwhere(self.mask)]


class PinnedFirstSlot(Slot):
    """A vector whose first entry is fixed at 0 (fixed row effects: alpha_1 = 0)."""

    @property
    def size(self):
        return max(self.shape[0] - 1, 0)

    def pack(self, value):
        return np.asarray(value)[1:]

    def unpack(self, vec):
        return np.concatenate([[0.0], vec])

    def pack_grad(self, grad, value):
        return np.asarray(grad)[1:]

    def entries(self):
        return [(i,) for i in range(1, self.shape[0])]


class CholeskySlot(Slot):
    """Batch of lower-triangular factors (n, k, k) with a positive diagonal, stored as
    their lower triangles row by row with the diagonal on the log scale."""

    def __init__(self, name, field, n, k, **kw):
        super().__init__(name, field, (n, k, k), **kw)
        self.n, self.k = n, k
        self.tri = np.tril_indices(k)
        self.diag_pos = np.flatnonzero(self.tri[0] == self.tri[1])

    @property
    def size(self):
        return self.n * len(self.tri[0])

    def pack(self, value):
        Lt = value[:, self.tri[0], self.tri[1]].copy()
        Lt[:, self.diag_pos] = np.log(Lt[:, self.diag_pos])
        return Lt.ravel()

    def unpack(self, vec):
        Lt = vec.reshape(self.n, -1).copy()
        Lt[:, self.diag_pos] = np.exp(Lt[:, self.diag_pos])
        L = np.zeros((self.n, self.k, self.k))
        L[:, self.tri[0], self.tri[1]] = Lt
        return L

    def pack_grad(self, grad, value):
        gL = grad[:, self.tri[0], self.tri[1]].copy()
        gL[:, self.diag_pos] *= value[:, self.tri[0], self.tri[1]][:, self.diag_pos]
        return gL.ravel()

    def entries(self):
        return [(i, r, c) for i in range(self.n) for r, c in zip(*self.tri)]

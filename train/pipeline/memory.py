"""Live activation bytes of a step: what the autograd graphs hold, and its peak.

:class:`LiveSaved` installs ``torch.autograd.graph.saved_tensors_hooks`` whose pack hook
wraps every tensor saved for backward in a small holder; a storage counts (once, however
often it is saved) from its first save until the last holder that references it is
dropped, i.e. until every graph node that saved it is freed. Parameters are excluded (they
live anyway). The peak of the live total is the per-rank activation memory of a step
(P1 graphs A, P2 graphs A', and what they share), independent of the allocator's caching
and of other processes, which RSS is not. The gradient factors that a split P3/P4 queues
for its W action (:mod:`matris.nn.deferred`) count too, from push to flush.
"""

from __future__ import annotations

import torch

from matris.nn.deferred import observe_queues


class _Held:
    __slots__ = ("key", "owner", "tensor")

    def __init__(self, tensor, key, owner):
        self.tensor, self.key, self.owner = tensor, key, owner

    def __del__(self):
        self.owner._release(self.key)


class LiveSaved:
    """Context manager: ``live`` and ``peak`` bytes of saved tensors (see module doc).

    Args:
        exclude: tensors (parameters) whose storages are not counted.
    """

    def __init__(self, exclude=()) -> None:
        self.excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self.refs: dict[int, list[int]] = {}
        self.live = 0
        self.peak = 0

    def _add(self, t) -> int | None:
        """Count one more reference to ``t``'s storage; its key, or None if excluded."""
        st = t.untyped_storage()
        key, nbytes = st.data_ptr(), st.nbytes()
        if key in self.excluded or nbytes == 0:
            return None
        entry = self.refs.get(key)
        if entry is None:
            self.refs[key] = [1, nbytes]
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        else:
            entry[0] += 1
        return key

    def hold(self, tensors) -> None:
        """A weight-gradient queue took these factors (``observe_queues``)."""
        for t in tensors:
            self._add(t)

    def release(self, tensors) -> None:
        """…and dropped them (flush)."""
        for t in tensors:
            self._release(t.untyped_storage().data_ptr())

    def _pack(self, t):
        key = self._add(t)
        if key is None:
            return t
        # Hold a detached alias: holding ``t`` itself would tie a saved *output* to its
        # own grad_fn (a cycle through C++ that the garbage collector cannot see, so the
        # graph would never be freed). Unpacking re-attaches the autograd metadata.
        return _Held(t.detach(), key, self)

    @staticmethod
    def _unpack(held):
        return held.tensor if isinstance(held, _Held) else held

    def _release(self, key: int) -> None:
        entry = self.refs.get(key)
        if entry is None:
            return
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self.refs[key]

    def __enter__(self) -> LiveSaved:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        self._queues = observe_queues(self)
        self._queues.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._queues.__exit__(*exc)
        self._hooks.__exit__(*exc)

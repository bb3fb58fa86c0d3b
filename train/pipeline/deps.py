"""Dependency rules of the four phases, as data (shared by validate, simulate, lower and
the list scheduler).

For compute action (k, s, m), with the program's phase list ``phases`` and the sweep
direction table :data:`~.actions.DIRECTION`:

* **chain**: if stage u = s − DIRECTION[k] exists, (k, u, m) must finish first and its
  boundary tensors (:data:`~.actions.BOUNDARY` [k]) travel u → s;
* **local**: for every phase after the first, the previous phase of the *same* stage
  must finish first (P2 reuses the P1 graph, P3 the P2 graph, P4 takes P3's second-order
  h cotangent). Where the chain leaves the model (stage S−1 for P1→P2, stage 0 for
  P2→P3, S−1 for P3→P4) this local edge is the **turn**;
* **W after its phase**: W3 after P3, W4 after P4 of the same stage and micro-batch;
* a fused ``P34`` (last stage) inherits the dependencies of P3 and P4;
* ``REDUCE`` of a stage comes after every compute action of that stage.

Activation-set lifetimes (research note section 1), used for peak-memory accounting:
A = P1 graph, created by P1, freed after the last of P4/P34/W3/W4; A' = P2 graph,
created by P2, freed after the last of P3/W3 (eager) or P4/W4 (lazy-P3) or P34;
Q3 / Q4 = the deferred weight-gradient factors a split P3 / P4 queues
(:mod:`matris.nn.deferred`), created by that critical action, freed by its W action.
"""

from __future__ import annotations

from dataclasses import dataclass

from .actions import DIRECTION, SPLIT_W, W_OF, Action, Kind
from .program import Program


@dataclass(frozen=True, slots=True)
class Dep:
    """``producer`` must finish before the dependent action starts.

    ``phase`` is set for a chain edge (the sweep whose boundary tensors move);
    ``None`` for a same-stage edge (turn, local graph reuse, W after its phase).
    """

    producer: Action
    phase: Kind | None
    rule: str  # "chain", "turn", "local", "w-after", "reduce"


def predecessors(prog: Program, action: Action) -> list[Dep]:
    """Direct dependencies of a compute (or REDUCE) action."""
    k, s, m = action.kind, action.stage, action.microbatch
    if k is Kind.REDUCE:
        return [Dep(a, None, "reduce") for mb in range(prog.num_microbatches)
                for a in (Action(kk, s, mb) for kk in prog.stage_kinds(s, mb))]
    if k in W_OF:
        return [Dep(prog.resolve(W_OF[k], s, m), None, "w-after")]
    if k is Kind.P34:
        deps = _phase_deps(prog, Kind.P3, s, m) + _phase_deps(prog, Kind.P4, s, m)
        return [d for d in deps if d.producer != action]
    return _phase_deps(prog, k, s, m)


def _phase_deps(prog: Program, k: Kind, s: int, m: int) -> list[Dep]:
    phases = prog.phases
    j = phases.index(k)
    deps = []
    u = s - DIRECTION[k]
    if 0 <= u < prog.num_stages:
        deps.append(Dep(prog.resolve(k, u, m), k, "chain"))
    if j > 0:
        prev = phases[j - 1]
        # The turn: the previous sweep ended on this stage, so the chain continues here.
        at_turn = not 0 <= s + DIRECTION[prev] < prog.num_stages
        deps.append(Dep(prog.resolve(prev, s, m), None, "turn" if at_turn else "local"))
    return deps


def successors_map(prog: Program) -> dict[Action, list[tuple[Action, Dep]]]:
    """producer → [(dependent, dep)] over all expected compute actions."""
    out: dict[Action, list[tuple[Action, Dep]]] = {}
    for a in prog.expected_actions():
        for d in predecessors(prog, a):
            out.setdefault(d.producer, []).append((a, d))
    return out


def freeing_actions(prog: Program, name: str, stage: int, mb: int) -> tuple[Action, ...]:
    """Actions after all of which set ``name`` of (stage, mb) is dead."""
    if name in _W_OF_SET:
        return (Action(_W_OF_SET[name], stage, mb),)
    kinds = prog.stage_kinds(stage, mb)
    if Kind.P34 in kinds:
        return (Action(Kind.P34, stage, mb),)
    if name == "A" or not prog.four_phase:
        last = [Kind.P4, *(w for w in kinds if w in W_OF)]
    elif prog.lazy_p3:
        last = [Kind.P4, *(w for w in kinds if w is Kind.W4)]
    else:
        last = [Kind.P3, *(w for w in kinds if w is Kind.W3)]
    return tuple(Action(k, stage, mb) for k in last)


#: The set a split phase's critical action queues for its W action, and that W action.
QUEUE_OF = {Kind.P3: "Q3", Kind.P4: "Q4"}
_W_OF_SET = {q: SPLIT_W[k] for k, q in QUEUE_OF.items()}


def creates(prog: Program, action: Action) -> str | None:
    """The activation set an action allocates: P1 → 'A', P2 → "A'" (four-phase only),
    a P3 / P4 whose W part is a separate action → 'Q3' / 'Q4'."""
    k = action.kind
    if k is Kind.P1:
        return "A"
    if k is Kind.P2:
        return "A'" if prog.four_phase else None
    if prog.splits(action):
        return QUEUE_OF[k]
    return None


def sets_created(prog: Program, stage: int, queues: bool = True) -> list[str]:
    """Names of the sets a micro-batch of a uniformly split program creates on ``stage``
    (see :func:`creates`); ``queues=False``: A and A' only."""
    names = (creates(prog, Action(k, stage, 0)) for k in prog.stage_kinds(stage)
             if queues or k not in QUEUE_OF)
    return [n for n in names if n is not None]

"""LAWN: Logit Attenuating Weight Normalization (Gupta et al., arXiv 2108.05839; §2.8).

Wraps any torch optimizer (proxylab's or torch's):

1. Free phase, ``free_steps`` steps: the base optimizer runs untouched, weight decay
   included — bit-identical to using the base alone.
2. At the switch (after step ``free_steps``), for every constrained weight W_l (default:
   the parameters of groups with role "head", the last homogeneous layer) record
   c_l = ‖W_l‖_F and set weight decay to 0 for them (the constrained tensors get param
   groups of their own when LAWN is built: same hyperparameters, so the free phase is
   unchanged, and the group layout stays fixed for schedulers and checkpoints).
3. After every later step: optionally remove the radial component of the update,
   W ← W_new - (⟨Δ, W_old⟩/‖W_old‖²)·W_old with Δ = W_new - W_old, then project
   W ← c_l·W/‖W‖_F, so ‖W_l‖ = c_l exactly from then on.

Stacked parameters (group ``stacked=True``) get one c per member. The norm is per tensor,
as the brief states; the paper is not explicit about per-layer vs per-neuron [verify].

``LAWN`` subclasses torch.optim.Optimizer (LR schedulers check that) but does not own
state: ``param_groups``, ``state`` and ``defaults`` are the base optimizer's, so a
schedule writing ``group["lr"]`` and ``probe_next_step()`` reach the base. Its own state
(steps, switch, c_l) travels in ``state_dict()["lawn"]``.
"""

from __future__ import annotations

import torch

from proxylab.optim.base import tensor_norm, tensor_sum
from proxylab.optim.linalg import check_bool, check_int, config_error


class LAWN(torch.optim.Optimizer):
    EXTRA_DEFAULTS = {"free_steps": 100, "remove_radial": False}

    def __init__(self, base_optimizer: torch.optim.Optimizer, params_to_constrain=None,
                 free_steps: int = 100, *, remove_radial: bool = False):
        check_int("extra.free_steps", free_steps, 0)
        check_bool("extra.remove_radial", remove_radial)
        self.base = base_optimizer
        self.free_steps, self.remove_radial = free_steps, remove_radial
        self.steps, self.active = 0, False
        self._constrained = self._resolve(params_to_constrain)  # [(param, name, stacked)]
        self._isolate()
        self.c: list[torch.Tensor] = []
        self.decay_before: list = []
        self._probe = False
        self._lawn_stats: dict[str, float] = {}
        self._lawn_member_stats: dict[str, list[float]] = {}
        if free_steps == 0:
            self._switch()

    @classmethod
    def validate_extra(cls, extra: dict) -> None:
        for key, value in extra.items():
            if key not in cls.EXTRA_DEFAULTS:
                raise config_error(f"optim.extra.{key}: unknown hyperparameter for LAWN; "
                                   f"allowed: {', '.join(sorted(cls.EXTRA_DEFAULTS))}")
        check_int("extra.free_steps", extra.get("free_steps", 100), 0)
        check_bool("extra.remove_radial", extra.get("remove_radial", False))

    # ---- pass-through of the torch.optim.Optimizer surface ---------------------------
    param_groups = property(lambda self: self.base.param_groups,
                            lambda self, v: setattr(self.base, "param_groups", v))
    state = property(lambda self: self.base.state,
                     lambda self, v: setattr(self.base, "state", v))
    defaults = property(lambda self: self.base.defaults,
                        lambda self, v: setattr(self.base, "defaults", v))

    def __getattr__(self, name):  # eigh_counts, last_tensor_stats, hooks, ...
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def __getstate__(self):
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self):
        return f"LAWN(free_steps={self.free_steps}, base={self.base!r})"

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group) -> None:
        self.base.add_param_group(param_group)

    def probe_next_step(self) -> None:
        self._probe = True
        if hasattr(self.base, "probe_next_step"):
            self.base.probe_next_step()

    @property
    def last_stats(self) -> dict[str, float]:
        return {**getattr(self.base, "last_stats", {}), **self._lawn_stats}

    @property
    def last_member_stats(self) -> dict[str, list[float]]:
        return {**getattr(self.base, "last_member_stats", {}), **self._lawn_member_stats}

    # ---- which tensors, and the switch ----------------------------------------------
    def _resolve(self, spec):
        spec = ("head",) if spec is None else ((spec,) if isinstance(spec, str) else tuple(spec))
        by_role = all(isinstance(s, str) for s in spec)
        wanted = {id(s) for s in spec} if not by_role else set()
        out = []
        for gi, group in enumerate(self.param_groups):
            names = group.get("names")
            for pi, p in enumerate(group["params"]):
                if (group.get("role") in spec) if by_role else (id(p) in wanted):
                    out.append((p, names[pi] if names else f"g{gi}.p{pi}",
                                bool(group.get("stacked", False))))
        if not out:
            what = f"roles {list(spec)}" if by_role else "the given tensors"
            raise config_error(f"optim.name: LAWN needs at least one constrained weight; no "
                               f"parameter of the optimizer matches {what}")
        return out

    def _isolate(self) -> None:
        """Give the constrained tensors groups of their own, once, at construction.

        Same hyperparameters, so the free phase is unchanged; the group layout is then
        fixed for the whole run (LR schedulers and state_dict rely on that), and the
        switch only has to zero those groups' weight decay.
        """
        targets = {id(p) for p, _, _ in self._constrained}
        for group in list(self.param_groups):
            keep = [i for i, p in enumerate(group["params"]) if id(p) not in targets]
            if not keep or len(keep) == len(group["params"]):
                continue
            moved = [i for i in range(len(group["params"])) if i not in keep]
            new = {k: (v.clone() if isinstance(v, torch.Tensor) else v)
                   for k, v in group.items() if k not in ("params", "names")}
            new["params"] = [group["params"][i] for i in moved]
            if "names" in group:
                new["names"] = [group["names"][i] for i in moved]
                group["names"] = [group["names"][i] for i in keep]
            group["params"] = [group["params"][i] for i in keep]
            self.base.add_param_group(new)

    def _constrained_groups(self) -> list[dict]:
        targets = {id(p) for p, _, _ in self._constrained}
        return [g for g in self.param_groups if any(id(p) in targets for p in g["params"])]

    @torch.no_grad()
    def _switch(self) -> None:
        self.c = [tensor_norm(p, st).clone() for p, _, st in self._constrained]
        for group in self._constrained_groups():
            wd = group.get("weight_decay", 0.0)
            self.decay_before.append(wd)
            group["weight_decay"] = torch.zeros_like(wd) if isinstance(wd, torch.Tensor) else 0.0
        self.active = True

    # ---- the step -----------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        olds = ([p.clone() for p, _, _ in self._constrained]
                if self.active and self.remove_radial else None)
        loss = self.base.step(closure)
        self.steps += 1
        if self.active:
            for k, (p, _, st) in enumerate(self._constrained):
                if olds is not None:
                    w0 = olds[k]
                    r = tensor_sum((p - w0) * w0, st) / tensor_sum(w0 * w0, st).clamp_min(1e-300)
                    p.sub_(r * w0)
                p.mul_(self.c[k] / tensor_norm(p, st).clamp_min(1e-300))
        elif self.steps >= self.free_steps:
            self._switch()
        if self._probe:
            self._probe = False
            self._record_stats()
        return loss

    def _record_stats(self) -> None:
        stats = {"opt/lawn_active": float(self.active)}
        members: dict[str, list[float]] = {}
        for k, (p, name, st) in enumerate(self._constrained):
            vals = {"norm": tensor_norm(p, st)}
            if self.active:
                vals["c"] = self.c[k]
            for key, v in vals.items():
                flat = v.detach().double().flatten()
                stats[f"opt/lawn_{key}/{name}"] = float(flat.mean())
                if st:
                    members[f"opt/lawn_{key}/{name}"] = [float(x) for x in flat]
        self._lawn_stats, self._lawn_member_stats = stats, members

    # ---- checkpoints ------------------------------------------------------------------
    def state_dict(self):
        sd = self.base.state_dict()
        sd["lawn"] = {"steps": self.steps, "active": self.active,
                      "c": [c.clone() for c in self.c]}
        return sd

    def load_state_dict(self, state_dict) -> None:
        state_dict = dict(state_dict)
        lawn = state_dict.pop("lawn", None)
        self.base.load_state_dict(state_dict)    # the saved groups carry weight_decay = 0
        if lawn is not None:
            self.steps, self.active = lawn["steps"], lawn["active"]
            self.c = [c.clone() for c in lawn["c"]]

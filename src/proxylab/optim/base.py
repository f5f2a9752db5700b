"""The shared optimizer shell: one weight-decay applier, one LR application, instrumentation.

Every proxylab optimizer is ``ProxyOptimizer`` plus a small *direction* function
(optimizers.md §0): per tensor,

    u_t   = direction(θ_{t-1}, g_t, state)                 # no LR, no weight decay
    θ_t   = θ_{t-1} - step_size · u_t - D_t(θ_{t-1})

where ``step_size`` is the group ``lr`` (times a per-tensor shape scale if the subclass
says so) and ``D_t`` is the decay term chosen by the group's ``wd_mode``:

    decoupled    D = lr · λ · θ_{t-1}              (torch AdamW form, θ(1 - γ_t λ))
    independent  D = (lr / peak_lr) · λ · θ_{t-1}  (Wortsman et al.: follows the schedule s_t,
                                                    not multiplied by the peak LR)
    l2           g ← g + λ θ_{t-1} before the direction (goes through the preconditioner)
    none         nothing

Decay is always evaluated on θ_{t-1} (torch order). ``p.grad`` is never mutated.

How a subclass plugs in
-----------------------
::

    class MyOpt(ProxyOptimizer):
        def __init__(self, params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.0,
                     wd_mode="decoupled", *, my_knob=5):
            super().__init__(params, dict(lr=lr, beta1=betas[0], beta2=betas[1],
                                          weight_decay=weight_decay, wd_mode=wd_mode,
                                          my_knob=my_knob))

        def direction(self, p, g, state, hp):       # REQUIRED, per tensor
            if "m" not in state:                    # lazy state init, shapes of p
                state["m"] = torch.zeros_like(p)
            state["m"].lerp_(g, 1 - hp["beta1"])
            return state["m"].sign()                # a NEW tensor or a state buffer

        def step_size(self, p, state, hp):          # OPTIONAL: default hp["lr"]
            return hp["lr"] * shape_scale(p)        # e.g. Muon's sqrt(max(1, rows/cols))

* ``direction(p, g, state, hp) -> Tensor`` returns u with the shape of ``p``.
  ``p`` is θ_{t-1} (read it, never write it); ``g`` is the gradient (``p.grad``, or
  ``p.grad + λθ`` under l2; never write it in place); ``state`` is ``self.state[p]``, a
  dict the subclass owns, except ``state["step"]``: an int the shell increments *before*
  the call (t = 1 on the first step). The returned tensor is used before the next
  direction call, so returning a state buffer is fine.
* ``hp`` is a dict of the group's hyperparameters (every group key except ``params`` /
  ``names``), already broadcast for ``p``: a python float stays a float; a tensor of
  shape ``[M]`` (per-member value) is viewed as ``[M, 1, ..., 1]`` with ``p.ndim`` dims.
  Extra keys: ``hp["stacked"]`` (bool), ``hp["role"]`` (str; "embedding", "hidden", "head",
  "norm", "bias" or "" when unknown), ``hp["lr"]``, ``hp["peak_lr"]``, ``hp["weight_decay"]``,
  ``hp["wd_mode"]``.
* ``step_size(p, state, hp)`` (optional) returns the multiplier of u: float or a broadcast
  tensor. Decay always uses the plain ``hp["lr"]`` (as torch Muon/Adafactor do).
* ``validate_group(group)`` (optional) checks a new param group; raise ConfigError. The
  shell already checks lr, weight_decay, wd_mode, beta1/beta2 in [0, 1), eps >= 0.
* Write the direction with elementwise ops and with the helpers below for reductions
  (``tensor_sum``, ``tensor_norm``, ``tensor_rms``, ``tensor_dims``): they reduce over the
  dims of ONE logical tensor and keep dims, so the same code works on stacked parameters.
  ``host_scalar(x, stacked)`` turns such a reduction into a python float when the tensor is
  a single CPU tensor (cheaper scalar math), else leaves it a tensor.

Stacked parameters (many small models trained as one)
-----------------------------------------------------
A param group with ``stacked=True`` holds parameters whose dim 0 is a member dim of size
M; each member is an independent model. Any hyperparameter of that group may be a tensor
of shape ``[M]`` (lr, peak_lr, weight_decay, beta1, beta2, eps, ...); the shell broadcasts
it (see ``hp``). A direction must never mix members: reduce only with the helpers, and for
matrix ops (Muon, Shampoo) treat dim 0 as a batch dim (``torch.linalg`` and ``@`` batch).
The loop's schedule ``group["lr"] = group["peak_lr"] * s_t`` works for tensors as well.

Instrumentation
---------------
``opt.probe_next_step()`` arms the next ``step()``; after it ``opt.last_stats`` is a flat
``{"opt/<key>": float}`` aggregated over all tensors, ``opt.last_tensor_stats`` is
``{param_name: {key: float}}`` (names from ``names=[...]`` in the group, as
``build_optimizer`` sets them, else ``"g<i>.p<j>"``) and, when a stacked group exists,
``opt.last_member_stats`` is ``{"opt/<key>": [float] * M}``. Core keys, from the shell:
``update_rms`` (RMS of u, before LR), ``applied_rms`` (RMS of step_size·u),
``decay_rms`` (RMS of D_t), ``rel_change`` (‖θ_t-θ_{t-1}‖/‖θ_{t-1}‖), ``cos_update_grad``
(cos(u, g) with the raw gradient), ``grad_rms``, ``param_rms``.
A subclass adds its own with ``self.stat(key, num, den=1.0, agg="sum")`` inside
``direction`` — call it only ``if self.probing:`` (probing off costs one flag check).
``num``/``den`` are floats or tensors (0-d, or broadcastable ``[M, 1, ...]`` per member);
aggregation is Σnum/Σden over tensors (``agg="sum"``) or the max of num/den (``agg="max"``).
Example: ``self.stat("frac_v_below_eps", (v.sqrt() < eps).sum(), v.numel())``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Iterable

import torch
from torch import Tensor

from proxylab.optim.probe_math import (bcast, div_like_torch, max_like_torch, pooled_sums,
                                       sqrt_all, to_host, vdiv, vmax, vsum)

WD_MODES = ("decoupled", "independent", "l2", "none")
ROLES = ("embedding", "hidden", "head", "norm", "bias")


def _config_error(msg: str) -> Exception:
    from proxylab.config import ConfigError  # noqa: PLC0415 (config is light, avoid cycles)

    return ConfigError(msg)


# ----------------------------------------------------------------------------------
# reductions over one logical tensor (dim 0 is the member dim when stacked)


def tensor_dims(x: Tensor, stacked: bool) -> tuple[int, ...]:
    return tuple(range(1, x.ndim)) if stacked else tuple(range(x.ndim))


def tensor_sum(x: Tensor, stacked: bool) -> Tensor:
    if stacked and x.ndim == 1:
        return x
    return x.sum(dim=tensor_dims(x, stacked), keepdim=True) if stacked else x.sum()


def tensor_norm(x: Tensor, stacked: bool) -> Tensor:
    return tensor_sum(x * x, stacked).sqrt()


def tensor_numel(x: Tensor, stacked: bool) -> int:
    return x[0].numel() if stacked else x.numel()


def tensor_rms(x: Tensor, stacked: bool) -> Tensor:
    return (tensor_sum(x * x, stacked) / tensor_numel(x, stacked)).sqrt()


def host_scalar(x: Tensor, stacked: bool) -> Any:
    """A per-tensor reduction as a python float when that is free (one CPU tensor), else the
    tensor: saves the few-µs dispatch of every small tensor op that follows on CPU."""
    return float(x) if not stacked and x.device.type == "cpu" else x


def ratio_or_one(num: Any, den: Any) -> Any:
    """num/den, and 1 where num or den is 0 (trust ratios); floats or tensors."""
    if not isinstance(num, Tensor) and not isinstance(den, Tensor):
        return num / den if num > 0 and den > 0 else 1.0
    num, den = torch.as_tensor(num), torch.as_tensor(den)
    return torch.where((num > 0) & (den > 0), num / den.clamp_min(1e-300), torch.ones_like(num / den))


def broadcast_hp(v: Any, ndim: int) -> Any:
    """A per-member tensor [M] -> [M, 1, ..., 1] with ``ndim`` dims; anything else as is."""
    if isinstance(v, Tensor) and v.ndim == 1 and ndim > 1:
        return v.view(-1, *([1] * (ndim - 1)))
    return v


def _schedule(lr: Any, peak: Any) -> Any:
    """s_t = lr / peak_lr (0 where the peak is 0)."""
    if isinstance(peak, Tensor):
        return torch.where(peak > 0, lr / peak.clamp_min(1e-300), torch.zeros_like(peak))
    return lr / peak if peak else 0.0


def _is_zero(v: Any) -> bool:
    return not isinstance(v, Tensor) and v == 0


def check_hparam(name: str, value: Any, lo: float = 0.0, hi: float = math.inf,
                 hi_open: bool = False) -> None:
    """Range check for a float or per-member tensor hyperparameter; raises ConfigError."""
    vals = value.detach().flatten().tolist() if isinstance(value, Tensor) else [value]
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v) \
                or v < lo or v > hi or (hi_open and v == hi):
            span = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
            raise _config_error(f"optim.{name}: {value!r} is out of range; allowed {span}")


# ----------------------------------------------------------------------------------


class ProxyOptimizer(torch.optim.Optimizer):
    """Base shell. Subclasses implement :meth:`direction` (and optionally :meth:`step_size`)."""

    def __init__(self, params: Iterable, defaults: dict[str, Any]):
        defaults = {"weight_decay": 0.0, "wd_mode": "decoupled", "stacked": False,
                    "role": "", **defaults}
        self.probing = False
        self.last_stats: dict[str, float] = {}
        self.last_tensor_stats: dict[str, dict[str, float]] = {}
        self.last_member_stats: dict[str, list[float]] = {}
        self._cur: dict[str, list] | None = None
        super().__init__(params, defaults)

    # ---- groups -----------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        g = self.param_groups[-1]
        if g["role"] not in ("", *ROLES):
            raise _config_error(f"param group role: {g['role']!r} is not a role; use one of "
                                f"{', '.join(ROLES)} (proxylab.optim.param_groups(model) "
                                "tags them for you)")
        if g["wd_mode"] not in WD_MODES:
            raise _config_error(f"optim.wd_mode: {g['wd_mode']!r} is not allowed; "
                                f"choose one of {', '.join(map(repr, WD_MODES))}")
        check_hparam("lr", g["lr"])
        check_hparam("weight_decay", g["weight_decay"])
        for k in ("beta1", "beta2"):
            if g.get(k) is not None:
                check_hparam(k, g[k], 0.0, 1.0, hi_open=True)
        if g.get("eps") is not None:
            check_hparam("eps", g["eps"])
        if "peak_lr" not in g:  # the lr the group starts with; schedules scale from it
            lr = g["lr"]
            g["peak_lr"] = lr.clone() if isinstance(lr, Tensor) else lr
        self.validate_group(g)

    @classmethod
    def from_model(cls, model: torch.nn.Module, *, roles: dict[str, str] | None = None,
                   **kwargs: Any) -> "ProxyOptimizer":
        """``cls(proxylab.optim.param_groups(model, lr=...), **kwargs)``: role-tagged groups
        (embeddings, head, norm gains, biases told apart from hidden matrices; no decay on
        gains, biases and embeddings), at ``kwargs["lr"]`` or the class's default LR."""
        import inspect  # noqa: PLC0415

        from proxylab.optim import param_groups  # noqa: PLC0415 (the package imports this)

        lr = kwargs.get("lr", inspect.signature(cls.__init__).parameters["lr"].default)
        return cls(param_groups(model, lr=lr, roles=roles), **kwargs)

    def validate_group(self, group: dict[str, Any]) -> None:
        """Hook for subclass-specific checks of a new group (raise ConfigError)."""

    def _hparams(self, group: dict[str, Any], ndim: int) -> dict[str, Any]:
        hp = {k: v for k, v in group.items() if k not in ("params", "names")}
        if group["stacked"]:
            for k, v in hp.items():
                hp[k] = broadcast_hp(v, ndim)
        return hp

    # ---- subclass API -------------------------------------------------------------
    def direction(self, p: Tensor, g: Tensor, state: dict, hp: dict[str, Any]) -> Tensor:
        raise NotImplementedError

    def step_size(self, p: Tensor, state: dict, hp: dict[str, Any]) -> Any:
        return hp["lr"]

    # ---- instrumentation ------------------------------------------------------------
    def probe_next_step(self) -> None:
        self.probing = True

    def stat(self, key: str, num: Any, den: Any = 1.0, agg: str = "sum") -> None:
        if self._cur is not None:
            self._cur.setdefault(key, []).append((num, den, agg))

    # ---- the step ---------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        probing = self.probing
        if probing:
            records: list[tuple[str, bool, dict, Tensor, int]] = []
        for gi, group in enumerate(self.param_groups):
            mode, stacked = group["wd_mode"], group["stacked"]
            names = group.get("names")
            hp_by_ndim: dict[int, dict] = {}
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                hp = hp_by_ndim.get(p.ndim)
                if hp is None:
                    hp = hp_by_ndim[p.ndim] = self._hparams(group, p.ndim)
                lam, lr = hp["weight_decay"], hp["lr"]
                state = self.state[p]
                state["step"] = state.get("step", 0) + 1
                g = p.grad
                if mode == "l2" and not _is_zero(lam):
                    g = g + lam * p
                if probing:
                    self._cur = {}
                    theta0 = p.detach().clone()
                u = self.direction(p, g, state, hp)
                size = self.step_size(p, state, hp)
                rate = 0.0
                if mode in ("decoupled", "independent") and not _is_zero(lam):
                    rate = lr * lam if mode == "decoupled" else _schedule(lr, hp["peak_lr"]) * lam
                    if isinstance(rate, Tensor) or rate != 0:
                        p.mul_(1 - rate)
                if isinstance(size, Tensor):
                    p.addcmul_(u, size, value=-1)
                else:
                    p.add_(u, alpha=-size)
                if probing:
                    core = self._core_stats(p, p.grad, u, size, rate, theta0, stacked)
                    name = names[pi] if names else f"g{gi}.p{pi}"
                    records.append((name, stacked, self._cur, core, tensor_numel(p, stacked)))
                    self._cur = None
        if probing:
            self.probing = False
            self._finish_stats(records)
        return loss

    def _core_stats(self, p, g, u, size, rate, theta0, stacked) -> Tensor:
        """The shell's sums for one tensor, rows ``_CORE_SUMS`` (each per member when stacked),
        stacked into one tensor so that they reach the host in one copy with the others."""
        s = lambda x: tensor_sum(x, stacked)  # noqa: E731
        sq = lambda x: s(x.mul_(x))           # noqa: E731  (x is a temporary: square in place)
        applied = u * size
        decay = theta0 * rate                 # D_t (zero under l2 / none)
        delta = p - theta0
        # stack promotes mixed dtypes (float32 sums beside float64 ones under [M] float64
        # hyperparameters) to the wider, which holds the narrower exactly
        return torch.stack([s(u * u), sq(applied), sq(decay), sq(delta),
                            s(u * g), s(g * g), s(theta0 * theta0)])

    # _core_stats' rows, and the probes they make: (key, numerator, denominator), "n" being
    # the element count (per member). cos_update_grad's denominator is rebuilt from the
    # pooled Σu² and Σg² (see _ratios), so the one given here is never read.
    _CORE_SUMS = ("u²", "applied²", "decay²", "Δθ²", "<u,g>", "g²", "θ²")
    _CORE_PROBES = (("update_rms", "u²", "n"), ("applied_rms", "applied²", "n"),
                    ("decay_rms", "decay²", "n"), ("rel_change", "Δθ²", "θ²"),
                    ("cos_update_grad", "<u,g>", "one"), ("grad_rms", "g²", "n"),
                    ("param_rms", "θ²", "n"))
    _SQRT_KEYS = ("update_rms", "applied_rms", "decay_rms", "rel_change", "grad_rms", "param_rms")

    def _finish_stats(self, records) -> None:
        """Per tensor (members pooled), over all tensors, and per member (stacked groups)."""
        tables: list[dict[str, list]] = []        # {key: [num, den, agg]}: per tensor, ...
        tot: dict[str, list] = {}                 # ... over all tensors ...
        mem: dict[str, list] = {}                 # ... and per member of stacked groups
        for stacked, stats in self._host_stats(records):
            per = {}
            for key, (numv, denv, num, den, agg) in self._pool(stats).items():
                per[key] = [[num], [den], agg]
                a = tot.setdefault(key, [0.0, 0.0, agg])
                if agg == "max":
                    a[0] = max_like_torch(a[0], num) if a[1] else num
                    a[1] = 1.0
                else:
                    a[0], a[1] = a[0] + num, a[1] + den
                if stacked:
                    b = mem.get(key)
                    if b is None or len(b[0]) != len(numv):
                        mem[key] = [numv, denv, agg]
                    elif agg == "max":
                        b[0] = vmax([b[0], numv])
                    else:
                        b[0], b[1] = vsum([b[0], numv]), vsum([b[1], denv])
            tables.append(per)
        tables.append({key: [[num], [den], agg] for key, (num, den, agg) in tot.items()})
        tables.append(mem)

        *per_tensor, total, members = self._ratios(tables)
        self.last_tensor_stats = {name: {key: v[0] for key, v in out.items()}
                                  for (name, *_), out in zip(records, per_tensor)}
        self.last_stats = {f"opt/{key}": v[0] for key, v in total.items()}
        self.last_member_stats = {f"opt/{key}": v for key, v in members.items()}

    def _host_stats(self, records) -> list[tuple[bool, dict[str, list]]]:
        """Per record (stacked, {key: [(num, den, agg), ...]}) with every num/den a list of
        floats; the shell's probes come after the subclass's, the order they were made in."""
        values = []                               # every tensor, to the host in one go
        for _, _, rec, core, _ in records:
            values.append(core)
            values += [x for items in rec.values() for num, den, _ in items for x in (num, den)]
        host = iter(to_host(values))             # read back in the same order
        out = []
        for _, stacked, rec, _, n in records:
            core = next(host)
            k = len(core) // len(self._CORE_SUMS)  # 1, or M when stacked
            rows = {r: core[i * k:(i + 1) * k] for i, r in enumerate(self._CORE_SUMS)}
            rows.update(n=[float(n)], one=[1.0])
            stats = {key: [(next(host), next(host), agg) for _, _, agg in items]
                     for key, items in rec.items()}
            for key, num, den in self._CORE_PROBES:
                stats.setdefault(key, []).append((rows[num], rows[den], "sum"))
            out.append((stacked, stats))
        return out

    @staticmethod
    def _pool(stats: dict[str, list]) -> dict[str, tuple]:
        """One tensor's {key: (numv, denv, num, den, agg)}: several values of a key add up
        elementwise (agg "sum": numv, denv) or take the elementwise max of num/den (agg
        "max": numv, ones); num and den pool the members (their sums, or the max and 1)."""
        vecs = {}
        for key, items in stats.items():
            agg = items[0][2]
            if agg == "max":
                numv = vmax([vdiv(a, b) for a, b, _ in items])
                vecs[key] = (numv, [1.0] * len(numv), agg)
            else:
                numv = vsum([a for a, _, _ in items])
                denv = [1.0] * len(numv) if key == "cos_update_grad" else \
                    vsum([b for _, b, _ in items])
                if len(denv) == 1 < len(numv):   # one per-member count (numel) for M members
                    denv = denv * len(numv)
                vecs[key] = (numv, denv, agg)
        sums = iter(pooled_sums([v for numv, denv, agg in vecs.values() if agg != "max"
                                  for v in (numv, denv)]))
        return {key: (numv, denv, functools.reduce(max_like_torch, numv), 1.0, agg) if agg == "max"
                else (numv, denv, next(sums), next(sums), agg)
                for key, (numv, denv, agg) in vecs.items()}

    def _ratios(self, tables: list[dict[str, list]]) -> list[dict[str, list[float]]]:
        """Each {key: [num, den, agg]} as {key: values}: num/den (agg "sum"; its sqrt for the
        RMS keys) or num (agg "max"); cos_update_grad is Σ<u,g> / sqrt(Σ|u|² Σ|g|²).

        All tables at once, so that the square roots take two torch calls (``sqrt_all``).
        """
        def cos_parts(t):
            return bcast(t["update_rms"][0], t["grad_rms"][0])

        cos_tables = [t for t in tables
                      if "cos_update_grad" in t and t["cos_update_grad"][2] != "max"]
        cos_dens = iter(sqrt_all([u2 * g2 for t in cos_tables for u2, g2 in zip(*cos_parts(t))]))
        outs: list[dict[str, list[float]]] = []
        rooted: list[tuple[dict, str]] = []       # (out, key) still to take the sqrt of
        for t in tables:
            out: dict[str, list[float]] = {}
            for key, (num, den, agg) in t.items():
                if agg == "max":
                    out[key] = list(num)
                    continue
                if key == "cos_update_grad":
                    den = [next(cos_dens) for _ in cos_parts(t)[0]]
                out[key] = vdiv(num, den)
                if key in self._SQRT_KEYS:
                    rooted.append((out, key))
            outs.append(out)
        roots = iter(sqrt_all([x for out, key in rooted for x in out[key]]))
        for out, key in rooted:
            out[key] = [next(roots) for _ in out[key]]
        return outs

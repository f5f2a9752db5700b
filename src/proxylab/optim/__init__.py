"""Optimizers: ``torch.optim.Optimizer`` subclasses on one shell (``base.py``), a registry of
names for ``optim.name``, and ``build_optimizer(model, cfg)``.

Every registered optimizer is importable by its class name (``from proxylab.optim import
Muon, SOAP, Shampoo, LAWN``) and usable in any PyTorch code. Optimizers that treat tensors by
their role (Muon, Adalayer-SGD, LAWN) need role-tagged param groups; ``param_groups(model)``
builds them for any ``nn.Module`` (``Muon.from_model(model)`` does it in one call):

    from proxylab.optim import Muon, param_groups
    opt = Muon(param_groups(model, lr=0.02), lr=0.02)      # or Muon.from_model(model)

All of them share one weight-decay semantics (``wd_mode``: decoupled / independent / l2 / none) and
one instrumentation (``probe_next_step()`` then ``last_stats``). See ``base.py`` and
research/optimizers.md.

Registry entries are lazy ``"module:Class"`` strings, so importing this package (which
``config.from_flat`` does to validate) costs only torch. ``optim.name = "lawn-<base>"`` wraps
any registered base in ``LAWN`` (constraining the LM head after ``optim.extra.free_steps``).

OptimConfig → constructor: ``lr``, ``weight_decay``, ``wd_mode`` always; ``beta1``/``beta2``
become ``betas=(beta1, beta2)`` when the constructor takes ``betas``, else ``beta1`` becomes
``momentum`` (SGD, LARS, Signum, Muon) or ``beta1``; ``eps`` when it takes ``eps``; fields an
optimizer has no use for are ignored (Lion ignores eps). ``optim.extra.KEY`` must be a
keyword of the constructor (anything else is a ConfigError naming the allowed keys).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from proxylab.config import ConfigError, OptimConfig
from proxylab.optim.adafactor import Adafactor, FactoredAdam
from proxylab.optim.adam import Adalayer, AdalayerSGD, Adam, AdamAtan2, AdamW
from proxylab.optim.base import ROLES, WD_MODES, ProxyOptimizer
from proxylab.optim.lawn import LAWN
from proxylab.optim.layerwise import LAMB, NovoGrad
from proxylab.optim.muon import Muon
from proxylab.optim.sgd import LARS, SGD
from proxylab.optim.shampoo import Shampoo
from proxylab.optim.sign import Lion, Signum
from proxylab.optim.soap import SOAP

__all__ = ["Adafactor", "Adalayer", "AdalayerSGD", "Adam", "AdamAtan2", "AdamW", "FactoredAdam",
           "LAMB", "LARS", "LAWN", "Lion", "Muon", "NovoGrad", "ProxyOptimizer", "ROLES", "SGD",
           "SOAP", "Shampoo", "Signum", "available", "build_optimizer", "default_lr",
           "describe_optimizers", "get_class", "infer_roles", "param_groups",
           "validate_optim_config"]


@dataclass(frozen=True)
class Entry:
    target: str                 # "module:Class"
    default_lr: float           # documented default peak LR for the width-128 GPT proxy
    fixed: dict = field(default_factory=dict)   # constructor kwargs the recipe pins
    doc: str = ""


# Default LRs: the best of a coarse scan (2-3 values) on the GPT proxy (width 128, depth 2,
# batch 16x128 bytes, 200 steps, cosine, 5% warmup, clip 1.0, wd 0); val loss at 200 steps
# in brackets (AdamW 2.44). tests/test_optim_train.py checks each stays within 10% of AdamW.
REGISTRY: dict[str, Entry] = {
    # [2.44]; Adam + L2 (torch Adam) is adamw with wd_mode="l2": one name, one semantics
    "adamw": Entry("proxylab.optim.adam:AdamW", 3e-3, doc="Adam + the shared weight decay"),
    # [0.1: 2.58, 0.3: 2.54, 1.0: 2.66]
    "sgd": Entry("proxylab.optim.sgd:SGD", 0.3, doc="heavy-ball momentum = beta1; extra.nesterov"),
    # [3e-4: 2.55, 1e-3: 2.42]
    "lion": Entry("proxylab.optim.sign:Lion", 1e-3, doc="sign of interpolated momentum"),
    # [3e-4: 2.54, 1e-3: 2.43]
    "signum": Entry("proxylab.optim.sign:Signum", 1e-3, doc="sign of momentum (beta1)"),
    # [2.50]
    "adalayer": Entry("proxylab.optim.adam:Adalayer", 3e-3, doc="one v per tensor, head per row"),
    # [3e-3: 2.56, 1e-2: 2.49] (SGD parts at 30x: extra.sgd_lr_mult)
    "adalayer-sgd": Entry("proxylab.optim.adam:AdalayerSGD", 1e-2,
                          doc="Adalayer on head + norms, SGD momentum elsewhere"),
    # [2.42]
    "factored-adam": Entry("proxylab.optim.adafactor:FactoredAdam", 3e-3,
                           doc="Adam with Adafactor-factored v"),
    # [2.51]
    "adafactor": Entry("proxylab.optim.adafactor:Adafactor", 1e-2,
                       doc="paper Adafactor; lr caps the relative step"),
    # [2.42]
    "adam-atan2": Entry("proxylab.optim.adam:AdamAtan2", 3e-3, doc="eps-free atan2 Adam"),
    # [1e-2: 2.65, 3e-2: 2.52, 0.1: 2.48]
    "novograd": Entry("proxylab.optim.layerwise:NovoGrad", 0.1, doc="layer-wise normalised momentum"),
    # [1e-2: 2.43, 3e-2: 2.40]
    "lamb": Entry("proxylab.optim.layerwise:LAMB", 1e-2, doc="Adam direction x layer trust ratio"),
    # [3: 2.49, 10: 2.60]
    "lars": Entry("proxylab.optim.sgd:LARS", 3.0, doc="momentum SGD x layer trust ratio"),
    # second-order family (written alongside, in their own modules)
    # [2.30]
    "shampoo": Entry("proxylab.optim.shampoo:Shampoo", 3e-3, doc="Shampoo with grafting"),
    # [2.34]
    "soap": Entry("proxylab.optim.soap:SOAP", 3e-3, doc="Adam in Shampoo's eigenbasis"),
    # [2.36 with Keller's aux AdamW lr 3e-4; with extra.adam_lr = 3e-3, the default since:
    #  2.21 vs AdamW 2.39 at 16 eval batches (muon.py has the width-32 numbers)]
    "muon": Entry("proxylab.optim.muon:Muon", 0.02, doc="orthogonalised momentum (+ AdamW aux)"),
}
LAWN_TARGET = "proxylab.optim.lawn:LAWN"


def __getattr__(name: str):
    """A class registered after this module was written (``REGISTRY[...] = Entry(...)``) is
    importable by its class name too: ``from proxylab.optim import MyOpt``."""
    for entry in REGISTRY.values():
        if entry.target.rsplit(":", 1)[-1] == name:
            return _load(entry.target)
    raise AttributeError(f"module 'proxylab.optim' has no attribute {name!r}")

LAWN_PREFIX = "lawn-"
# LAWN's own keywords; every other optim.extra key goes to the base optimizer
_LAWN_OWN = ("base_optimizer", "params_to_constrain")


def _module_exists(target: str) -> bool:
    try:
        return importlib.util.find_spec(target.split(":")[0]) is not None
    except ImportError:
        return False


def _load(target: str, key: str = "optim.name") -> type:
    mod, cls = target.split(":")
    try:
        return getattr(importlib.import_module(mod), cls)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{key}: {target} is registered but cannot be loaded ({e})") from None


def available() -> list[str]:
    """Registered names whose module is present (and ``lawn-<base>`` when LAWN is)."""
    names = [n for n, e in REGISTRY.items() if _module_exists(e.target)]
    if _module_exists(LAWN_TARGET):
        names += [LAWN_PREFIX + n for n in list(names)]
    return names


def _split_name(name: str) -> tuple[str, bool]:
    """'lawn-adamw' -> ('adamw', True); 'adamw' -> ('adamw', False)."""
    if name.startswith(LAWN_PREFIX) and name[len(LAWN_PREFIX):] in REGISTRY:
        return name[len(LAWN_PREFIX):], True
    return name, False


def _entry(name: str) -> Entry:
    base, _ = _split_name(name)
    if base not in REGISTRY:
        choices = ", ".join(repr(n) for n in REGISTRY)
        hint = "; Adam with L2 is optim.name='adamw' with optim.wd_mode='l2'" if base == "adam" else ""
        raise ConfigError(f"optim.name: {name!r} is not allowed; choose one of {choices} "
                          f"(or 'lawn-<one of these>'){hint}")
    return REGISTRY[base]


def get_class(name: str) -> type:
    return _load(_entry(name).target)


def default_lr(name: str) -> float:
    """The documented default peak LR of ``name`` for the width-128 GPT proxy."""
    return _entry(name).default_lr


def _signature(cls: type) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(cls.__init__).parameters)


def _common_kwargs(cfg: OptimConfig, sig: dict) -> dict[str, Any]:
    """lr / weight_decay / wd_mode / betas-or-momentum / eps, as far as ``sig`` takes them."""
    kw: dict[str, Any] = {"lr": cfg.lr}
    for k in ("weight_decay", "wd_mode"):
        if k in sig:
            kw[k] = getattr(cfg, k)
    if "betas" in sig:
        kw["betas"] = (cfg.beta1, cfg.beta2)
    elif "momentum" in sig:
        kw["momentum"] = cfg.beta1
    elif "beta1" in sig and sig["beta1"].default is not None:
        kw["beta1"] = cfg.beta1
    if "eps" in sig and not isinstance(sig["eps"].default, tuple):
        kw["eps"] = cfg.eps
    return kw


def _constructor_kwargs(cfg: OptimConfig) -> tuple[type, dict, type | None, dict]:
    """(class, kwargs, LAWN class or None, LAWN kwargs); raises ConfigError on bad extras."""
    entry = _entry(cfg.name)
    _, lawn = _split_name(cfg.name)
    cls = _load(entry.target)
    sig = _signature(cls)
    kw = {**_common_kwargs(cfg, sig), **entry.fixed}
    lawn_cls, lawn_kw = (_load(LAWN_TARGET), {}) if lawn else (None, {})
    lawn_sig = _signature(lawn_cls) if lawn else {}
    taken = set(kw) | {"self", "params"}
    allowed = sorted(k for k, p in sig.items() if k not in taken and p.kind in
                     (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    lawn_allowed = sorted(k for k in lawn_sig if k not in ("self", *_LAWN_OWN))
    for key, value in cfg.extra.items():
        if key in allowed:
            kw[key] = value
        elif key in lawn_allowed:
            lawn_kw[key] = value
        else:
            hint = " (set it with optim.beta1/beta2/eps/lr)" if key in taken else ""
            raise ConfigError(f"optim.extra.{key}: not a hyperparameter of {cfg.name!r}{hint}; "
                              f"allowed: {', '.join(allowed + lawn_allowed) or 'none'}")
    return cls, kw, lawn_cls, lawn_kw


def describe_optimizers() -> dict[str, dict[str, Any]]:
    """Every ``optim.name`` -> ``{"lr": default LR, "doc": ..., "extra": {KEY: default}}``:
    the ``optim.extra.KEY`` settings are the constructor's keywords beyond the common keys
    (what ``proxylab keys`` prints). ``lawn-<name>`` adds LAWN's own to any of them."""
    out: dict[str, dict[str, Any]] = {}
    for name in available():
        base, lawn = _split_name(name)
        if lawn:
            continue
        entry = REGISTRY[base]
        sig = _signature(_load(entry.target))
        taken = set(_common_kwargs(OptimConfig(), sig)) | set(entry.fixed) | {"self", "params"}
        extra = {k: p.default for k, p in sig.items() if k not in taken and p.kind in
                 (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty}
        out[name] = {"lr": entry.default_lr, "doc": entry.doc, "extra": extra}
    if _module_exists(LAWN_TARGET):
        sig = _signature(_load(LAWN_TARGET))
        out[LAWN_PREFIX + "<name>"] = {
            "lr": float("nan"), "doc": "LAWN around any name above (its LR and settings too)",
            "extra": {k: p.default for k, p in sig.items()
                      if k not in ("self", *_LAWN_OWN) and p.default is not p.empty}}
    return out


def validate_optim_config(cfg: OptimConfig) -> None:
    """Check name, common fields and extras by building the optimizer on a dummy tensor."""
    if cfg.wd_mode not in WD_MODES:
        raise ConfigError(f"optim.wd_mode: {cfg.wd_mode!r} is not allowed; choose one of "
                          f"{', '.join(map(repr, WD_MODES))}")
    for key, lo, hi in (("lr", 0.0, None), ("weight_decay", 0.0, None), ("eps", 0.0, None),
                        ("beta1", 0.0, 1.0), ("beta2", 0.0, 1.0)):
        v = getattr(cfg, key)
        if not (v >= lo and (hi is None or v < hi)):
            span = f"[{lo}, {hi})" if hi is not None else f">= {lo}"
            raise ConfigError(f"optim.{key}: {v!r} is out of range; allowed {span}")
    cls, kw, lawn_cls, lawn_kw = _constructor_kwargs(cfg)
    dummy = torch.zeros(2, 2, requires_grad=True)
    try:
        opt = cls([{"params": [dummy], "role": "hidden"}], **kw)
        if lawn_cls is not None:
            lawn_cls(opt, [dummy], **lawn_kw)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"optim: {cfg.name!r} rejects these settings: {e}") from None


_NORM_TYPES = tuple(t for t in (getattr(torch.nn, n, None) for n in (
    "LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LocalResponseNorm")) if t is not None)


def infer_roles(model: torch.nn.Module) -> dict[str, str]:
    """Parameter name -> role for any ``nn.Module`` (``model.param_roles()`` when it has one).

    Without ``param_roles``: biases -> "bias"; ``nn.Embedding`` weights -> "embedding";
    norm-layer weights and any other tensor with < 2 dims -> "norm"; the weight of the last
    module (in registration order) that owns a >= 2-D weight -> "head" (the output layer);
    every other >= 2-D tensor -> "hidden". Check the result when the output layer is not
    registered last, and correct it with ``param_groups(model, roles={...})``.
    """
    if hasattr(model, "param_roles"):
        return dict(model.param_roles())
    roles: dict[str, str] = {}
    last_matrix = None
    seen: set[int] = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:                # a tied weight keeps its first role
                continue
            seen.add(id(p))
            name = f"{mname}.{pname}" if mname else pname
            if pname == "bias":
                roles[name] = "bias"
            elif isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
                roles[name] = "embedding"
            elif isinstance(module, _NORM_TYPES) or p.ndim < 2:
                roles[name] = "norm"
            else:
                roles[name] = "hidden"
                last_matrix = name
    if last_matrix is not None:
        roles[last_matrix] = "head"
    return roles


def _roles(model: torch.nn.Module, names: list[str], roles: dict | None) -> dict[str, str]:
    out = infer_roles(model)
    for n, role in (roles or {}).items():
        if n not in names:
            raise ConfigError(f"param_groups(roles=...): {n!r} is not a trainable parameter of "
                              f"the model; names look like {', '.join(names[:3])}, ...")
        out[n] = role
    for n in names:
        if out.get(n) not in ROLES:
            raise ConfigError(f"param role of {n!r}: {out.get(n)!r} is not a role; allowed: "
                              f"{', '.join(ROLES)}")
    return out


def _decays(role: str, cfg: OptimConfig) -> bool:
    return {"embedding": cfg.decay_embeddings, "head": cfg.decay_head, "hidden": True,
            "norm": False, "bias": False}[role]


def param_groups(model: torch.nn.Module, cfg: OptimConfig | None = None, *,
                 roles: dict[str, str] | None = None, **settings: Any) -> list[dict[str, Any]]:
    """Role-tagged param groups of ``model``, for any proxylab optimizer (or torch's).

    One group per (role, LR scale) with keys ``params``, ``names``, ``role`` and
    ``weight_decay = 0`` for the roles that are never decayed (norm gains, biases, and
    embeddings unless ``decay_embeddings``). Settings come from ``cfg`` (an OptimConfig, as
    the training loop does) or from keywords of OptimConfig — ``lr``, ``weight_decay``,
    ``wd_mode``, ``decay_embeddings``, ``decay_head``; a keyword left out is left to the
    optimizer's own default (``param_groups(model)`` puts no ``lr`` in the groups).
    ``lr`` becomes ``lr``·the model's ``lr_scales()`` where it has them (muP).
    Roles are ``infer_roles(model)``; ``roles={"lm_head.weight": "head"}`` corrects single
    tensors (roles: embedding, hidden, head, norm, bias; anything else is a ConfigError).
    """
    if cfg is None:
        known = {f.name for f in dataclasses.fields(OptimConfig)} - {"name", "extra"}
        bad = sorted(set(settings) - known)
        if bad:
            raise ConfigError(f"param_groups: unknown setting(s) {', '.join(bad)}; allowed: "
                              f"{', '.join(sorted(known))}")
        given, cfg = set(settings), OptimConfig(**settings)
    else:
        given, cfg = {"lr", "weight_decay", "wd_mode"}, dataclasses.replace(cfg, **settings)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    role_of = _roles(model, names, roles)
    scales = model.lr_scales() if hasattr(model, "lr_scales") else {}
    if "lr" not in given and any(float(scales.get(n, 1.0)) != 1.0 for n in names):
        raise ConfigError("param_groups: this model scales LRs per tensor (model.lr_scales(), "
                          "e.g. muP); pass lr=... so each group's LR can be set")
    groups: dict[tuple[str, float], dict[str, Any]] = {}
    for n, p in named:
        role, scale = role_of[n], float(scales.get(n, 1.0))
        g = groups.get((role, scale))
        if g is None:
            g = groups[(role, scale)] = {"params": [], "names": [], "role": role}
            if "lr" in given:
                g["lr"] = g["peak_lr"] = cfg.lr * scale
            if not _decays(role, cfg):
                g["weight_decay"] = 0.0
            elif "weight_decay" in given:
                g["weight_decay"] = cfg.weight_decay
            if "wd_mode" in given:
                g["wd_mode"] = cfg.wd_mode
        g["params"].append(p)
        g["names"].append(n)
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` over ``model``'s parameters, grouped by role and LR scale."""
    cls, kw, lawn_cls, lawn_kw = _constructor_kwargs(cfg)
    groups = param_groups(model, cfg)
    opt = cls(groups, **kw)
    if lawn_cls is None:
        return opt
    head = [p for g in groups if g["role"] == "head" for p in g["params"]]
    return lawn_cls(opt, head, **lawn_kw)

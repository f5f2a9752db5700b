"""Run configuration: frozen dataclasses, TOML / ``--set`` loading, validation, hashing.

A run is a pure function of its :class:`RunConfig`; its id is a hash of the canonical
JSON form of that config (see :func:`run_id`). Every key is addressed by a dotted name
(``optim.lr``) in TOML files, ``--set`` overrides and sweep files.

Validation errors raise :class:`ConfigError`, which names the key and what is allowed;
the CLI turns it into exit code 2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping


class ConfigError(ValueError):
    """Bad user input: names the key or file and what is allowed (CLI exit code 2)."""


def _opt(default, *, choices=None, lo=None, hi=None, lo_open=False, doc="", added=False):
    """A config field with its allowed values attached as metadata.

    ``added=True`` marks a key introduced after run ids were first issued: while it holds
    its default it is left out of the run id, so adding a key never changes existing ids
    (stores keep resuming, golden ids keep matching). Every new key must pass it.
    """
    meta = {"choices": choices, "lo": lo, "hi": hi, "lo_open": lo_open, "doc": doc,
            "added": added}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------
# the five sections of a run config


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    name: str = _opt("text", choices=("text", "modular", "digits", "sparse_parity", "s5"),
                     doc="data / task family")
    seq_len: int = _opt(128, lo=1, doc="tokens per sequence (text)")
    path: str = _opt("", doc="'' = built-in corpus; a text file/folder or a .bin token file/folder "
                             "(stored as an absolute path), or hf:NAME (a datasets dataset)")
    vocab_size: int = _opt(0, lo=0, doc="token files: 0 = largest token id + 1")
    val_frac: float = _opt(0.1, lo=0.0, hi=0.5, lo_open=True, doc="text: share of documents held out")
    p: int = _opt(97, lo=2, doc="modular: the modulus (prime for ÷)")
    op: str = _opt("+", choices=("+", "-", "*", "/", "x2+y2"), doc="modular: the operation")
    train_frac: float = _opt(0.5, lo=0.0, hi=1.0, lo_open=True, doc="modular: share of pairs used for training; digits: share of images")
    full_batch: bool = _opt(False, doc="modular: every step uses the whole training set")
    corrupt_frac: float = _opt(0.0, lo=0.0, hi=1.0, added=True,
                               doc="modular: share of training labels replaced by random ones (xi)")
    parity_n: int = _opt(40, lo=1, hi=1024, added=True, doc="sparse_parity: input bits n")
    parity_k: int = _opt(3, lo=1, added=True, doc="sparse_parity: relevant bits k (<= parity_n)")
    parity_samples: int = _opt(2000, lo=2, hi=1 << 22, added=True,
                               doc="sparse_parity: distinct inputs drawn (all 2^n when fewer), "
                                   "split by train_frac")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    name: str = _opt("gpt", choices=("gpt", "mlp", "answer_tf", "quad_mlp", "cnn"), doc="model family")
    width: int = _opt(128, lo=1, doc="residual / hidden width")
    depth: int = _opt(2, lo=1, doc="transformer blocks (gpt) or hidden layers (mlp)")
    heads: int = _opt(4, lo=1, doc="attention heads (gpt); must divide width")
    mlp_ratio: int = _opt(4, lo=1, doc="MLP hidden = mlp_ratio * width")
    norm: str = _opt("layernorm", choices=("layernorm", "rmsnorm"), doc="normalisation layer")
    qk_norm: bool = _opt(False, doc="per-head LayerNorm on queries and keys (Wortsman et al.)")
    pos: str = _opt("learned", choices=("learned", "rope"), doc="position encoding")
    bias: bool = _opt(False, doc="biases in linear layers")
    param: str = _opt("sp", choices=("sp", "mup", "mup-simple"),
                      doc="sp; mup (full: init, LRs, 1/d_h attention); mup-simple (LR x base/width on hidden matrices only)")
    base_width: int = _opt(128, lo=1, doc="muP: width whose init and LRs sp and mup share (attention scale still differs)")
    init_scale: float = _opt(1.0, lo=0.0, lo_open=True, doc="multiplies every init std")
    qk_kappa: float = _opt(0.0, lo=0.0, added=True,
                           doc="> 0: impose q, k = sqrt(kappa) z / RMS(z) per head (Wortsman's transplant)")
    quant: str = _opt("none", choices=("none", "bitnet158"), added=True,
                      doc="bitnet158 = BitLinear (ternary weights, 8-bit activations) in the hidden matrices")
    quant_scale: str = _opt("absmean", choices=("absmean", "absmedian"), added=True,
                            doc="bitnet158: weight scale gamma = mean|W| (BitNet) or median|W| (Reloaded)")
    scale_inv: bool = _opt(False, added=True,
                           doc="hidden matrices use each neuron's weight row normalised to unit norm "
                               "(W_i/|W_i|): scale-invariant weights (van Laarhoven 2017; Kosson et al. 2024)")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    name: str = _opt("adamw", doc="optimizer (see `proxylab.optim.available()`)")
    lr: float = _opt(3e-3, lo=0.0, doc="peak learning rate")
    weight_decay: float = _opt(0.0, lo=0.0, doc="decay coefficient; meaning set by wd_mode")
    wd_mode: str = _opt("decoupled", choices=("decoupled", "independent", "l2", "none"),
                        doc="decoupled = torch (lr*wd), independent = schedule*wd, l2, none")
    beta1: float = _opt(0.9, lo=0.0, hi=0.999999, doc="first-moment / momentum coefficient")
    beta2: float = _opt(0.95, lo=0.0, hi=0.999999, doc="second-moment coefficient")
    eps: float = _opt(1e-8, lo=0.0, doc="denominator epsilon")
    decay_embeddings: bool = _opt(False, doc="apply weight decay to embeddings")
    decay_head: bool = _opt(True, doc="apply weight decay to the output head")
    wd_until: float = _opt(1.0, lo=0.0, hi=1.0, added=True,
                           doc="weight decay is switched off after this fraction of train.steps (BitNet FAQ: 0.5)")
    extra: dict = _opt({}, doc="optimizer-specific hyperparameters, e.g. optim.extra.ns_steps=5")


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    name: str = _opt("cosine", choices=("constant", "cosine", "linear", "wsd"), doc="LR schedule")
    warmup: float = _opt(0.05, lo=0.0, doc="warmup steps, or a fraction of train.steps when < 1")
    min_lr_frac: float = _opt(0.1, lo=0.0, hi=1.0, doc="floor of the decay, as a fraction of the peak")
    decay_frac: float = _opt(0.2, lo=0.0, hi=1.0, doc="wsd: share of steps spent decaying")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    steps: int = _opt(200, lo=1, doc="optimizer steps")
    batch_size: int = _opt(16, lo=1, doc="sequences per step")
    seed: int = _opt(0, lo=0, doc="seeds init, data order and everything else")
    eval_every: int = _opt(50, lo=1, doc="validate every N steps (and at step 0 and the end)")
    eval_batches: int = _opt(4, lo=1, doc="fixed validation batches per evaluation")
    log_every: int = _opt(10, lo=1, doc="record optimizer/param probes every N steps")
    z_loss: float = _opt(0.0, lo=0.0, doc="coefficient of mean(log(Z)^2) added to the loss")
    loss_scale: float = _opt(1.0, lo=0.0, lo_open=True, added=True,
                             doc="loss x this before backward (gradients scaled, losses reported unscaled)")
    grad_clip: float = _opt(1.0, lo=0.0, doc="global grad-norm clip; 0 = off")
    diverge_factor: float = _opt(3.0, lo=1.0, lo_open=True,
                                 doc="stop as diverged when train loss > factor * initial loss")
    device: str = _opt("auto", choices=("auto", "cpu", "cuda"), doc="auto = cuda when present")
    threads: int = _opt(0, lo=0, doc="torch threads; 0 = all cores inline, 1 per worker in pools")
    precision: str = _opt("fp32", choices=("fp32", "bf16"), doc="bf16 = autocast matmuls")
    stop_at_val_acc: float = _opt(0.0, lo=0.0, hi=1.0, added=True,
                                  doc="stop (status done) at the first evaluation with val/acc >= this "
                                      "(tasks with accuracy; a final checkpoint is saved); 0 = off")
    loss_dtype: str = _opt("fp32", choices=("fp32", "fp64"), added=True,
                           doc="dtype the training loss is computed in from the logits; fp64 keeps a "
                               "fitted example's tiny loss and gradient from rounding to 0 (Nanda et al.)")
    loss: str = _opt("ce", choices=("ce", "mse"), added=True,
                     doc="training objective: cross-entropy, or MSE on one-hot targets (Doshi et al.)")
    ticket_from: str = _opt("", added=True,
                            doc="lottery ticket: id of a finished dense run (with checkpoints) whose final "
                                "weights give the magnitude mask; '' = off")
    ticket_sparsity: float = _opt(0.4, lo=0.0, hi=1.0, added=True,
                                  doc="lottery ticket: share of weights pruned (global magnitude)")
    checkpoint_every: int = _opt(0, lo=0, added=True,
                                 doc="save a resumable checkpoint every N steps next to the store; 0 = off")
    checkpoint_keep: int = _opt(2, lo=1, added=True, doc="checkpoints: how many of the newest to keep")
    checkpoint_keep_every: int = _opt(0, lo=0, added=True,
                                      doc="checkpoints: also keep every step that is a multiple of N; 0 = none")
    noise_scale_every: int = _opt(0, lo=0, added=True,
                                  doc="gradient noise scale probe (two-batch B_simple) every N steps, "
                                      "one extra forward/backward each; 0 = off (e.g. 25: ~1-2.5% of step time)")
    noise_scale_small: int = _opt(0, lo=0, added=True,
                                  doc="noise scale: B_small (a sub-batch of the training batch); "
                                      "0 = train.batch_size // 8")
    noise_scale_ema: float = _opt(0.9, lo=0.0, hi=0.999, added=True,
                                  doc="noise scale: decay per probe of the separate EMAs of |G|^2 and tr(Sigma)")
    ema_decay: float = _opt(0.0, lo=0.0, hi=0.99999, added=True,
                            doc="exponential weight average (bias-corrected) evaluated as val_ema/*; 0 = off")
    wd_probes: bool = _opt(False, added=True,
                           doc="weight-decay probes on probe steps: weight/row norms, angular update, "
                               "effective LR of scale-invariant weights, logit scale (wd/*)")
    freq_buckets: int = _opt(0, lo=0, added=True,
                             doc="validation loss per token-frequency bucket (text tasks; quantiles of "
                                 "the training tokens' mass) at every evaluation, val_bucket/*; 0 = off")


SECTIONS: dict[str, type] = {
    "task": TaskConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "schedule": ScheduleConfig,
    "train": TrainConfig,
}


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    # ---- conversions -------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values (``optim.extra`` stays one dict-valued key)."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    def replace(self, **dotted: Any) -> "RunConfig":
        return from_flat({**self.flat(), **dotted})

    @property
    def id(self) -> str:
        return run_id(self)


# ----------------------------------------------------------------------------------
# building and validating


def allowed_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]


def _check_value(key: str, f: dataclasses.Field, value: Any) -> Any:
    """Coerce ``value`` to the field's type and check its range / choices."""
    kind = f.type if isinstance(f.type, type) else {"str": str, "int": int, "float": float,
                                                    "bool": bool, "dict": dict}[f.type]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{key}: expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
    elif kind is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table of key = value, got {value!r}")
        value = {str(k): v for k, v in sorted(value.items())}
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        allowed = ", ".join(repr(c) for c in meta["choices"])
        raise ConfigError(f"{key}: {value!r} is not allowed; choose one of {allowed}")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        op = ">" if meta.get("lo_open") else ">="
        raise ConfigError(f"{key}: {value!r} is out of range; must be {op} {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"{key}: {value!r} is out of range; must be <= {hi}")
    return value


def from_flat(flat: Mapping[str, Any]) -> RunConfig:
    """Build a validated RunConfig from dotted keys; unknown keys are errors.

    ``optim.extra.NAME = value`` keys are gathered into the ``optim.extra`` dict.
    """
    per_section: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    extra: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split(".")
        if len(parts) >= 3 and parts[0] == "optim" and parts[1] == "extra":
            extra[".".join(parts[2:])] = value
            continue
        if len(parts) != 2 or parts[0] not in SECTIONS:
            raise ConfigError(
                f"unknown config key {key!r}; keys look like SECTION.NAME with SECTION one of "
                f"{', '.join(SECTIONS)} (see `proxylab keys`)")
        section, name = parts
        by_name = {f.name: f for f in fields(SECTIONS[section])}
        if name not in by_name:
            raise ConfigError(
                f"unknown config key {key!r}; {section} has: {', '.join(by_name)}")
        per_section[section][name] = _check_value(key, by_name[name], value)
    if extra:
        merged = {**per_section["optim"].get("extra", {}), **extra}
        per_section["optim"]["extra"] = {k: merged[k] for k in sorted(merged)}
    path = per_section["task"].get("path")
    if path and not path.startswith("hf:"):   # one file, one id, from whichever folder
        per_section["task"]["path"] = str(Path(path).expanduser().resolve())
    cfg = RunConfig(**{s: SECTIONS[s](**kw) for s, kw in per_section.items()})
    _check_cross_field(cfg)
    return cfg


def _check_cross_field(cfg: RunConfig) -> None:
    m, t = cfg.model, cfg.task
    if m.name == "gpt" and m.width % m.heads:
        raise ConfigError(f"model.heads: {m.heads} must divide model.width={m.width}")
    if m.name == "gpt" and m.pos == "rope" and (m.width // m.heads) % 2:
        raise ConfigError("model.pos: rope needs an even head dimension (model.width / model.heads)")
    if t.name == "modular" and t.op == "/" and not _is_prime(t.p):
        raise ConfigError(f"task.p: division needs a prime modulus, got {t.p}")
    if t.name == "sparse_parity" and t.parity_k > t.parity_n:
        raise ConfigError(f"task.parity_k: {t.parity_k} relevant bits is not allowed with "
                          f"task.parity_n = {t.parity_n}; choose 1 <= parity_k <= parity_n")
    if t.name == "sparse_parity" and m.name == "quad_mlp":
        raise ConfigError("model.name: 'quad_mlp' reads two operands (positions 0 and 2) and "
                          "cannot learn sparse_parity; choose 'mlp', 'gpt' or 'answer_tf'")
    if cfg.train.stop_at_val_acc > 0 and t.name == "text":
        raise ConfigError("train.stop_at_val_acc: task 'text' records no accuracy; use it with "
                          "'modular', 'digits', 'sparse_parity' or 's5', or set it to 0")
    if cfg.schedule.warmup >= 1 and cfg.schedule.warmup != int(cfg.schedule.warmup):
        raise ConfigError("schedule.warmup: a value >= 1 is a step count and must be whole")
    # optimizer names and their extra hyperparameters are checked by proxylab.optim, lazily
    from proxylab.optim import validate_optim_config  # noqa: PLC0415 (keeps config light)

    validate_optim_config(cfg.optim)


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, int(n**0.5) + 1))


def flatten_table(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested TOML tables -> dotted keys. ``optim.extra`` tables stay nested under dots."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_table(v, key + "."))
        else:
            out[key] = v
    return out


def parse_set(item: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, value); the value is read as a TOML literal when it is one."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=3e-3")
    key, raw = item.split("=", 1)
    key, raw = key.strip(), raw.strip()
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word such as adamw or rope
    return key, value


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None


def load_config(path: str | Path | None = None, sets: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A config from an optional TOML file plus ``--set`` overrides (later wins)."""
    flat: dict[str, Any] = {}
    if path is not None:
        flat.update(flatten_table(read_toml(path)))
    for item in sets:
        k, v = parse_set(item)
        flat[k] = v
    return from_flat(flat)


# ----------------------------------------------------------------------------------
# hashing


def canonical_json(cfg: RunConfig) -> str:
    """The hashed form: every key, except ``added`` keys that hold their default."""
    d = cfg.to_dict()
    for s, cls in SECTIONS.items():
        for f in fields(cls):
            if f.metadata.get("added") and d[s][f.name] == _default(f):
                del d[s][f.name]
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def run_id(cfg: RunConfig) -> str:
    """Stable 12-hex-digit id: sha256 of the canonical config JSON."""
    return hashlib.sha256(canonical_json(cfg).encode()).hexdigest()[:12]


def from_dict(d: Mapping[str, Mapping[str, Any]]) -> RunConfig:
    """Inverse of :meth:`RunConfig.to_dict` (validated)."""
    return from_flat(flatten_table({s: {k: v for k, v in sec.items() if k != "extra"}
                                    for s, sec in d.items()})
                     | {f"optim.extra.{k}": v for k, v in d.get("optim", {}).get("extra", {}).items()})

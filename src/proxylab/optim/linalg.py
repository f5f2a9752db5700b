"""Matrix kernels shared by the matrix optimizers (Muon, Shampoo, SOAP).

Every kernel works on plain tensors with any number of leading *batch* dims, so the
same code serves one parameter (no batch dim), a stacked parameter with a member dim
``[M, ...]`` and a batch of Kronecker factors ``[M, d, d]``. ``nbatch`` always says how
many leading dims are batch dims; "mode i" is dim ``nbatch + i`` of the tensor.

Numerics (see research/optimizers.md §2.5–2.7):

* Newton–Schulz uses Keller Jordan's quintic (a, b, c) = (3.4445, -4.7750, 2.0315) in
  the form X ← aX + (bA + cA²)X with A = XXᵀ, on the short side (transposed when
  rows > cols), after X ← X/(‖X‖_F + eps). It runs in ``dtype`` (fp32 on CPU: bf16
  matmul is ~100x slower there) and returns in the input dtype.
* Eigendecompositions go through :func:`safe_eigh`: try the working dtype, retry in
  float64 when torch raises or returns non-finite values (a *fallback*), and report a
  *failure* when float64 fails as well (callers then keep their previous result).
"""

from __future__ import annotations

import torch
from torch import Tensor

NS_COEFFS = (3.4445, -4.7750, 2.0315)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


# ----------------------------------------------------------------------------------
# Newton–Schulz orthogonalisation (Muon)


def newton_schulz(G: Tensor, steps: int = 5, coeffs=NS_COEFFS, eps: float = 1e-7,
                  dtype: torch.dtype | None = torch.float32) -> Tensor:
    """≈ U Vᵀ of the (batched) matrix G = U S Vᵀ; singular values land in ~[0.7, 1.2].

    The Frobenius normalisation is per matrix, so batched members never mix.
    """
    a, b, c = coeffs
    X = G.to(dtype) if dtype is not None else G.clone()
    tall = G.size(-2) > G.size(-1)
    if tall:  # iterate on the small Gram matrix
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * (A @ A)
        X = a * X + B @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


# ----------------------------------------------------------------------------------
# mode products on order-k tensors (Shampoo, SOAP)


def mode_product(x: Tensor, M: Tensor, mode: int, nbatch: int = 0,
                 transpose: bool = False) -> Tensor:
    """Contract mode ``mode`` of x with the first index of M (second if ``transpose``).

    x: [*B, d_0, ..., d_{k-1}], M: [*B, d_mode, d_mode]. The result has x's shape.
    With M = Q (an eigenbasis) this is the forward projection Qᵀ·x along that mode;
    with ``transpose=True`` it is the backward one Q·x.
    """
    d = nbatch + mode
    xm = x.movedim(d, -1)
    shape = xm.shape
    flat = xm.reshape(*shape[:nbatch], -1, shape[-1])   # [*B, rest, d_mode]
    out = flat @ (M.mT if transpose else M)
    return out.reshape(shape).movedim(-1, d)


def mode_gram(x: Tensor, mode: int, nbatch: int = 0) -> Tensor:
    """Σ over the other modes of x xᵀ along ``mode``: GGᵀ / GᵀG for a matrix. [*B, d, d]."""
    d = nbatch + mode
    xm = x.movedim(d, nbatch)
    flat = xm.reshape(*xm.shape[:nbatch + 1], -1)        # [*B, d_mode, rest]
    return flat @ flat.mT


def permute_mode(x: Tensor, idx: Tensor, mode: int, nbatch: int = 0) -> Tensor:
    """x re-ordered along ``mode`` by a per-batch index idx: [*B, d_mode]."""
    d = nbatch + mode
    xm = x.movedim(d, -1)
    view = idx.reshape(*idx.shape[:nbatch], *([1] * (xm.ndim - nbatch - 1)), idx.shape[-1])
    return torch.gather(xm, -1, view.expand(xm.shape)).movedim(-1, d)


# ----------------------------------------------------------------------------------
# eigendecompositions with a float64 fallback


class EighReport:
    """Per-matrix counters of decompositions, float64 retries (fallbacks) and unrecovered
    failures; each becomes a float64 tensor with the batch shape [*B] once counted, so
    stacked members keep their own counts."""

    KEYS = ("decomps", "fallbacks", "failures")

    def __init__(self) -> None:
        self.decomps = self.fallbacks = self.failures = 0

    def count(self, key: str, mask: Tensor) -> None:
        setattr(self, key, getattr(self, key) + mask.to(torch.float64))

    def add_to(self, state: dict) -> None:
        """Accumulate into ``state["eigh_<key>"]`` (the optimizer's per-tensor totals)."""
        for k in self.KEYS:
            v = getattr(self, k)
            if isinstance(v, Tensor):
                state[f"eigh_{k}"] = state.get(f"eigh_{k}", 0) + v


def decomposition_stats(stat, state: dict) -> None:
    """Probe stats from the accumulated counters: rates per decomposition."""
    calls = state.get("eigh_decomps")
    if calls is None:
        return
    den = calls.clamp_min(1)
    zero = torch.zeros_like(den)
    stat("eigh_fallback_rate", state.get("eigh_fallbacks", zero), den)
    stat("eigh_failure_rate", state.get("eigh_failures", zero), den)


def decomposition_totals(states) -> dict[str, int]:
    """Totals over an optimizer's per-tensor states."""
    return {f"eigh_{k}": int(sum(float(s[f"eigh_{k}"].sum()) for s in states if f"eigh_{k}" in s))
            for k in EighReport.KEYS}


def _eye_like(A: Tensor) -> Tensor:
    return torch.eye(A.size(-1), dtype=A.dtype, device=A.device)


def _jittered(A: Tensor, jitter) -> Tensor:
    """A + jitter·I; jitter a float or a per-matrix tensor [*B, 1, 1]."""
    if isinstance(jitter, Tensor):
        return A + jitter.to(A.dtype) * _eye_like(A)
    return A + jitter * _eye_like(A) if jitter else A


def safe_eigh(A: Tensor, jitter=0.0, report: EighReport | None = None):
    """Eigen-decomposition of symmetric (batched) A + jitter·I, ascending eigenvalues.

    Returns (L, Q, ok) in A's dtype, ok: bool [*B] — False for a matrix with NaN/inf
    entries (float64 cannot repair those; it is replaced by I so the rest of the batch,
    e.g. the other stacked members, is unaffected) — or None when eigh fails for the
    batch even in float64 (torch raises for the whole batch, so the retry and such a
    failure are counted for every matrix in it).
    """
    report = report if report is not None else EighReport()
    ok = torch.isfinite(A).flatten(-2).all(-1)
    report.count("decomps", torch.ones_like(ok))
    if not bool(ok.all()):
        report.count("failures", ~ok)
        A = torch.where(ok[..., None, None], A, _eye_like(A))
    dt = A.dtype
    work = A if dt in (torch.float32, torch.float64) else A.float()  # no bf16 eigh
    for attempt in (work, None):
        if attempt is None:
            if work.dtype == torch.float64:
                break
            report.count("fallbacks", ok)
            attempt = A.double()
        try:
            L, Q = torch.linalg.eigh(_jittered(attempt, jitter))
        except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
            continue
        if bool(torch.isfinite(L).all()) and bool(torch.isfinite(Q).all()):
            return L.to(dt), Q.to(dt), ok
    report.count("failures", ok)
    return None


def inverse_root(A: Tensor, root: int, eps, report: EighReport | None = None):
    """(A + eps·I)^(-1/root) for symmetric PSD (batched) A via eigh: (R, Q, ok) or None
    (see :func:`safe_eigh`; where ok is False, R and Q are identities to be discarded).
    ``eps`` is a float or a per-matrix tensor [*B, 1, 1] (members with their own ε).

    ε is added *before* the decomposition (DistributedShampoo's PerturbationConfig).
    A PSD matrix can come out of eigh with eigenvalues below ε (roundoff); as in
    DistributedShampoo, the spectrum of such a matrix is shifted up by ε - λ_min so
    every eigenvalue is ≥ ε and the power stays finite.
    """
    res = safe_eigh(A, jitter=eps, report=report)
    if res is None:
        return None
    L, Q, ok = res
    lmin = L.amin(dim=-1, keepdim=True)
    e = eps[..., 0].to(L.dtype) if isinstance(eps, Tensor) else eps   # [*B, 1] like lmin
    L = torch.where(lmin < e, L - lmin + e, L)
    return (Q * L.pow(-1.0 / root).unsqueeze(-2)) @ Q.mT, Q, ok


def descending_eigenbasis(A: Tensor, jitter, report: EighReport | None = None):
    """Eigenvectors of A + jitter·I as columns by descending eigenvalue (SOAP): (Q, ok)
    or None (see :func:`safe_eigh`)."""
    res = safe_eigh(A, jitter=jitter, report=report)
    return None if res is None else (res[1].flip(-1), res[2])


def identity_like(A: Tensor) -> Tensor:
    """A batch of identities with A's shape [*B, d, d]."""
    return _eye_like(A).expand_as(A).clone()


def keep_where(ok: Tensor, new: Tensor, old: Tensor | None) -> Tensor:
    """Per matrix of a batch: ``new`` where ok, else ``old`` (identity when None)."""
    if bool(ok.all()):
        return new
    return torch.where(ok[..., None, None], new, identity_like(new) if old is None else old)


def power_qr_refresh(A: Tensor, Q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One power-iteration step + QR from the current basis Q (SOAP's cheap refresh).

    The columns of Q are first re-ordered by their Rayleigh quotients diag(QᵀAQ) in
    descending order; callers must permute every statistic indexed by this basis (SOAP's
    second moment) with the returned order. Returns (Q_new, order, ok), order: [*B, d];
    a matrix with NaN/inf entries (ok False) keeps Q and the identity order.
    QR runs in float32 at least (torch has no bf16 QR).
    """
    ok = torch.isfinite(A).flatten(-2).all(-1)
    if not bool(ok.all()):  # a NaN factor keeps its basis, without touching the others
        A = torch.where(ok[..., None, None], A, _eye_like(A))
    AQ = A @ Q
    est = (Q * AQ).sum(dim=-2)                            # Rayleigh quotients
    order = torch.argsort(est, dim=-1, descending=True)
    order = torch.where(ok[..., None], order, torch.arange(order.shape[-1], device=A.device))
    AQs = torch.gather(AQ, -1, order.unsqueeze(-2).expand(AQ.shape))
    wd = AQs.dtype if AQs.dtype in (torch.float32, torch.float64) else torch.float32
    Qn, _ = torch.linalg.qr(AQs.to(wd))
    return keep_where(ok, Qn.to(Q.dtype), Q), order, ok


def basis_drift(Q_old: Tensor, Q_new: Tensor) -> Tensor:
    """1 - mean_i max_j |<q_new_i, q_old_j>| per matrix: 0 = same basis up to signs and
    order, → 1 as the new vectors leave the old ones' span. [*B]."""
    overlap = (Q_old.mT @ Q_new).abs().amax(dim=-2)
    return 1.0 - overlap.mean(dim=-1)


# ----------------------------------------------------------------------------------
# extra-hyperparameter checks shared by the matrix optimizers (config side)


def config_error(msg: str) -> Exception:
    from proxylab.config import ConfigError  # noqa: PLC0415 (keeps the kernels import-light)

    return ConfigError(msg)


def validate_extra(cls, extra: dict) -> None:
    """Unknown ``optim.extra`` keys and bad values -> ConfigError naming the key.

    Values are checked by constructing ``cls`` on a meta-device dummy parameter, so the
    constructor stays the single place that knows the allowed ranges.
    """
    allowed = getattr(cls, "EXTRA_DEFAULTS", {})
    for key in extra:
        if key not in allowed:
            raise config_error(
                f"optim.extra.{key}: unknown hyperparameter for {cls.__name__}; allowed: "
                f"{', '.join(sorted(allowed)) or '(none)'}")
    cls([torch.empty(2, 2, device="meta", requires_grad=True)], **extra)


def choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise config_error(f"optim.{key}: {value!r} is not allowed; choose one of "
                           f"{', '.join(map(repr, allowed))}")


def check_int(key: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise config_error(f"optim.{key}: expected an integer >= {lo}, got {value!r}")


def check_bool(key: str, value) -> None:
    if not isinstance(value, bool):
        raise config_error(f"optim.{key}: expected true or false, got {value!r}")


def member_view(h, ndim: int):
    """A per-member hyperparameter (any shape [M, 1, ...]) re-viewed as [M, 1, ..., 1] with
    ``ndim`` dims, to broadcast against factor matrices [M, d, d]; floats pass through."""
    if isinstance(h, torch.Tensor) and h.ndim >= 1:
        return h.reshape(-1, *([1] * (ndim - 1)))
    return h

"""Weighted-layer probe: softmax weights over a model's layers, learned with a linear probe.

``embedx fit --weighted-layers`` adds, per feature set and pooling, one configuration
``<set>@weighted/<pooling>`` whose features are all selected layers stacked as
``(num_items, num_layers, dim)``. Its model, ``weighted-linear`` (:class:`WeightedLayerClassifier`
or :class:`WeightedLayerRegressor`), standardises every layer with the training items' mean and
std, mixes the layers with softmax weights ``w = softmax(a)`` and feeds the mix to a linear
classifier (multinomial logistic loss) or regressor (squared loss), with an L2 penalty on the
linear weights as in scikit-learn's LogisticRegression (``C``) and Ridge (``alpha``). ``a`` and
the linear part are optimised jointly by L-BFGS from a fixed start (uniform weights, zero linear
weights) for at most ``max_iter`` iterations, so the fit is deterministic. This is the s3prl /
SpeechBrain "weighted layer sum" on cached features, without rerunning the model.

The configuration runs in the study like any other one: the estimator is cloned and fitted on
the training part of each fold only (its standardisation included), and its out-of-fold
predictions are ranked and compared with the same statistics. The learned weights of every fold
go to ``layer_weights.csv`` (see :func:`layer_weights_table`).

This module imports scikit-learn; the study imports it only when ``--weighted-layers`` is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from embedx.errors import ConfigError, DataError
from embedx.probing.analysis import Analysis
from embedx.text import number as _f

__all__ = [
    "MODEL",
    "WeightedAnalysis",
    "WeightedLayerClassifier",
    "WeightedLayerRegressor",
    "layer_weights_table",
]

#: the model name of every weighted configuration (registered in :mod:`embedx.probing.models`)
MODEL = "weighted-linear"
#: stds at or below this count as zero (a constant feature is centred, not scaled)
_EPS = 1e-8


class _WeightedLayerBase(BaseEstimator):
    """Shared fit of the classifier and the regressor (parameters stored as given)."""

    # ------------------------------------------------------------------ input handling

    def _stack(self, X: Any, fitting: bool) -> np.ndarray:
        """``X`` as ``(n, layers, dim)`` float64; a 2-D ``(n, layers * dim)`` is reshaped after fit."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 2 and not fitting and hasattr(self, "n_layers_"):
            if X.shape[1] != self.n_layers_ * self.dim_:
                raise DataError(f"expected {self.n_layers_ * self.dim_} features "
                                f"({self.n_layers_} layers x {self.dim_}); got {X.shape[1]}")
            X = X.reshape(len(X), self.n_layers_, self.dim_)
        if X.ndim != 3:
            raise DataError(f"the weighted-layer probe needs (items, layers, dim) features; got shape {X.shape}")
        if not fitting and X.shape[1:] != (self.n_layers_, self.dim_):
            raise DataError(f"expected {self.n_layers_} layers x {self.dim_}; got {X.shape[1]} x {X.shape[2]}")
        return X

    def _standardise(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) / self.scale_

    # ------------------------------------------------------------------ optimisation

    def _fit_stack(self, Z: np.ndarray, targets: np.ndarray, sample_weight: np.ndarray, outputs: int) -> None:
        """Minimise the loss over ``theta = [a (L), W (d*outputs), b (outputs)]`` with L-BFGS."""
        from scipy.optimize import minimize

        n, L, d = Z.shape
        penalty = self._penalty()
        layer_penalty = float(self.layer_alpha)
        if not layer_penalty >= 0:
            raise ConfigError(f"layer_alpha of the weighted-layer probe must be >= 0; got {self.layer_alpha}")

        def unpack(theta):
            a = theta[:L]
            W = theta[L:L + d * outputs].reshape(d, outputs)
            b = theta[L + d * outputs:]
            return a, W, b

        def loss_grad(theta):
            a, W, b = unpack(theta)
            s = np.exp(a - a.max())
            s /= s.sum()  # (L,) softmax layer weights
            h = np.einsum("nld,l->nd", Z, s)  # (n, d) the weighted layer mix
            scores = h @ W + b  # (n, outputs)
            loss, G = self._loss(scores, targets, sample_weight)  # G: d loss / d scores
            loss += 0.5 * penalty * float(np.sum(W * W)) + 0.5 * layer_penalty * float(a @ a)
            gW = h.T @ G + penalty * W
            gb = G.sum(axis=0)
            gs = np.einsum("nd,nld->l", G @ W.T, Z)  # d loss / d s
            ga = s * (gs - float(s @ gs)) + layer_penalty * a  # through the softmax
            return loss, np.concatenate([ga, gW.ravel(), gb])

        theta0 = np.zeros(L + d * outputs + outputs)  # uniform weights, zero linear part
        res = minimize(loss_grad, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": int(self.max_iter)})
        a, W, b = unpack(res.x)
        s = np.exp(a - a.max())
        self.layer_weights_ = s / s.sum()
        self.coef_ = W.T.copy()  # (outputs, d), scikit-learn's layout
        self.intercept_ = b.copy()
        self.n_iter_ = int(res.nit)

    def _prepare(self, X: Any) -> np.ndarray:
        X = self._stack(X, fitting=True)
        if len(X) < 2:
            raise DataError(f"the weighted-layer probe needs at least 2 training items; got {len(X)}")
        self.n_layers_, self.dim_ = X.shape[1], X.shape[2]
        self.mean_ = X.mean(axis=0)  # (L, d), training items only
        std = X.std(axis=0)
        self.scale_ = np.where(std > _EPS, std, 1.0)
        return self._standardise(X)

    def _mix(self, X: Any) -> np.ndarray:
        Z = self._standardise(self._stack(X, fitting=False))
        return np.einsum("nld,l->nd", Z, self.layer_weights_)

    def decision_function(self, X: Any) -> np.ndarray:
        """Linear scores of the layer mix: ``(n, classes)`` (``(n,)`` for regression)."""
        scores = self._mix(X) @ self.coef_.T + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores


class WeightedLayerClassifier(ClassifierMixin, _WeightedLayerBase):
    """Softmax-weighted sum of standardised layers + multinomial logistic regression.

    Args:
        C: inverse L2 strength on the linear weights (as ``LogisticRegression``'s ``C``; the
            loss is the summed cross-entropy + ``||W||^2 / (2 C)`` + ``layer_alpha ||a||^2 / 2``).
        layer_alpha: L2 strength on the layer logits ``a`` (towards uniform weights): without
            it, layers that carry the same information get arbitrary, saturated weights.
        max_iter: L-BFGS iterations at most.
        class_weight: ``None`` or ``"balanced"`` (weights ``n / (k * n_c)``).

    Attributes:
        layer_weights_: ``(num_layers,)`` the learned softmax weights (sum to 1).
        classes_: the class labels. coef_, intercept_: the linear part on the mix.
        mean_, scale_: ``(num_layers, dim)`` per-layer standardisation of the training items.
        n_layers_, dim_, n_iter_: shapes and iterations used.
    """

    def __init__(self, C: float = 1.0, layer_alpha: float = 1.0, max_iter: int = 300,
                 class_weight: str | None = None):
        self.C = C
        self.layer_alpha = layer_alpha
        self.max_iter = max_iter
        self.class_weight = class_weight

    def _penalty(self) -> float:
        if not self.C > 0:
            raise ConfigError(f"C of the weighted-layer probe must be > 0; got {self.C}")
        return 1.0 / float(self.C)

    @staticmethod
    def _loss(scores, onehot, weight):
        scores = scores - scores.max(axis=1, keepdims=True)
        logp = scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))
        loss = -float(np.sum(weight * np.sum(onehot * logp, axis=1)))
        G = weight[:, None] * (np.exp(logp) - onehot)
        return loss, G

    def fit(self, X: Any, y: Any) -> WeightedLayerClassifier:
        """Fit on ``X`` ``(n, layers, dim)`` and labels ``y``; returns ``self``."""
        if self.class_weight not in (None, "balanced"):
            raise ConfigError(f"unknown class weight {self.class_weight!r}; accepted: none, balanced")
        Z = self._prepare(X)
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        k = len(self.classes_)
        if k < 2:
            raise DataError(f"the weighted-layer probe needs at least 2 classes; got {k}")
        onehot = np.eye(k)[codes]
        weight = np.ones(len(codes))
        if self.class_weight == "balanced":
            counts = np.bincount(codes, minlength=k)
            weight = (len(codes) / (k * counts))[codes]
        self._fit_stack(Z, onehot, weight, outputs=k)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, classes)`` class probabilities."""
        scores = self._mix(X) @ self.coef_.T + self.intercept_
        scores -= scores.max(axis=1, keepdims=True)
        p = np.exp(scores)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        """``(n,)`` predicted class labels."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class WeightedLayerRegressor(RegressorMixin, _WeightedLayerBase):
    """Softmax-weighted sum of standardised layers + ridge regression.

    Args:
        alpha: L2 strength on the linear weights (as ``Ridge``'s ``alpha``; the loss is
            ``||y - y_hat||^2 + alpha ||W||^2 + layer_alpha ||a||^2 / 2``).
        layer_alpha: L2 strength on the layer logits ``a`` (towards uniform weights).
        max_iter: L-BFGS iterations at most.

    Attributes:
        layer_weights_: ``(num_layers,)`` the learned softmax weights (sum to 1).
        coef_, intercept_, mean_, scale_, n_layers_, dim_, n_iter_: as the classifier's.
    """

    def __init__(self, alpha: float = 1.0, layer_alpha: float = 1.0, max_iter: int = 300):
        self.alpha = alpha
        self.layer_alpha = layer_alpha
        self.max_iter = max_iter

    def _penalty(self) -> float:
        if not self.alpha >= 0:
            raise ConfigError(f"alpha of the weighted-layer probe must be >= 0; got {self.alpha}")
        return 2.0 * float(self.alpha)  # the loss below is halved, so this is Ridge's alpha

    @staticmethod
    def _loss(scores, target, weight):
        resid = scores - target
        return float(np.sum(weight[:, None] * resid * resid)), 2.0 * weight[:, None] * resid

    def fit(self, X: Any, y: Any) -> WeightedLayerRegressor:
        """Fit on ``X`` ``(n, layers, dim)`` and targets ``y``; returns ``self``."""
        Z = self._prepare(X)
        target = np.asarray(y, dtype=np.float64).reshape(-1, 1)
        self._fit_stack(Z, target, np.ones(len(target)), outputs=1)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """``(n,)`` predicted targets."""
        return self.decision_function(X)


# ------------------------------------------------------------------------------ configurations


def layer_weights_table(weights: Mapping[tuple[str, str], np.ndarray], configs: Sequence[Any]) -> pd.DataFrame:
    """The per-fold layer weights of every weighted configuration as one table.

    The interval is the t interval of the mean over folds (``t_{K-1} * sd / sqrt(K)``). The
    folds share most of their training items, so the spread over folds understates how much the
    weights would vary on new data: read it as a description of stability, not as a CI for a
    population weight.

    Args:
        weights: ``(configuration name, model)`` -> ``(num_folds, num_layers)`` weights.
        configs: the study's configurations (to find each weighted one's layers).

    Returns:
        Columns ``set, pooling, model, layer, weight_mean, ci_low, ci_high, fold_0, ...``.
    """
    from scipy.stats import t as student

    by_name = {c.name: c for c in configs}
    rows = []
    for (name, model), w in weights.items():
        config = by_name[name]
        w = np.asarray(w, dtype=np.float64)  # (folds, layers)
        k = len(w)
        mean = w.mean(axis=0)
        half = (student.ppf(0.975, k - 1) * w.std(axis=0, ddof=1) / np.sqrt(k)) if k > 1 else np.full(len(mean), np.nan)
        for li, block in enumerate(config.blocks):
            row = {"set": block.feature_set, "pooling": block.pooling, "model": model, "layer": block.layer,
                   "weight_mean": mean[li], "ci_low": max(0.0, mean[li] - half[li]),
                   "ci_high": min(1.0, mean[li] + half[li])}
            if not np.isfinite(half[li]):
                row["ci_low"] = row["ci_high"] = np.nan
            row.update({f"fold_{f}": w[f, li] for f in range(k)})
            rows.append(row)
    return pd.DataFrame(rows)


def plot_layer_weights(table: pd.DataFrame, path: Any) -> bool:
    """Bar plot of the mean layer weight (with its interval over folds), one panel per set.

    Returns:
        Whether a figure was written (``False`` for an empty table).
    """
    if table.empty:
        return False
    from embedx.figures import pyplot

    plt = pyplot()

    panels = list(dict.fromkeys(zip(table["set"], table["pooling"], table["model"], strict=True)))
    fig, axes = plt.subplots(1, len(panels), figsize=(max(6.0, 4.6 * len(panels)), 3.8), squeeze=False,
                             sharey=True, layout="constrained")
    for ax, (fset, pooling, model) in zip(axes[0], panels, strict=True):
        part = table[(table["set"] == fset) & (table["pooling"] == pooling) & (table["model"] == model)]
        mean = part["weight_mean"].to_numpy(dtype=float)
        low = np.nan_to_num(mean - part["ci_low"].to_numpy(dtype=float))
        high = np.nan_to_num(part["ci_high"].to_numpy(dtype=float) - mean)
        ax.bar(part["layer"].to_numpy(dtype=float), mean, yerr=np.vstack([low, high]), capsize=3, color="C0")
        ax.axhline(1.0 / len(part), color="grey", ls="--", lw=1, label="uniform")
        ax.set_title(f"{fset} ({pooling})")
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3, axis="y")
        if len(part) <= 30:
            ax.set_xticks(part["layer"].to_numpy(dtype=int))
    axes[0][0].set_ylabel("softmax layer weight (mean over folds)")
    axes[0][0].legend(fontsize="small")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------------- analysis


class WeightedAnalysis(Analysis):
    """The weighted-layer probe in the outputs: ``layer_weights.csv``, its figure and section.

    The ``SET@weighted/POOLING`` configurations are added when the data are loaded
    (``--weighted-layers``) and fitted in the study's grid like any other; this analysis
    reports the weights they learned (``study.layer_weights``).
    """

    name = "weighted"
    figures = (("layer_weights_plot", "Learned layer weights"),)

    def run(self, study: Any, state: Any, *, progress: bool = False, log: Any = None) -> pd.DataFrame | None:
        """The per-fold weights as :func:`layer_weights_table` (``None``: no weighted configuration)."""
        if not study.layer_weights:
            return None
        return layer_weights_table(study.layer_weights, study.dataset.configs)

    def write(self, value: pd.DataFrame, out: Path, files: dict[str, str]) -> None:
        """``layer_weights.csv`` and ``layer_weights.png``."""
        value.to_csv(out / "layer_weights.csv", index=False)
        files["layer_weights"] = "layer_weights.csv"
        if plot_layer_weights(value, out / "layer_weights.png"):
            files["layer_weights_plot"] = "layer_weights.png"

    def section(self, value: pd.DataFrame, study: Any, files: Mapping[str, str]) -> list[str]:
        """Each weighted probe's score next to the best single layer, and where its weight went."""
        s, m = study.summary, study.metric
        lines = ["## Weighted layers", ""]
        lines.append("Each `SET@weighted/POOLING` configuration learns softmax weights over the layers (each "
                     "layer standardised in the training fold) jointly with a linear probe, on the training "
                     "part of every fold; weights per fold are in `layer_weights.csv`.")
        lines.append("")
        for (name, model), w in study.layer_weights.items():
            row = s[(s["config"] == name) & (s["model"] == model)].iloc[0]
            fset, pooling = name.split("@")[0], name.rsplit("/", 1)[1]
            singles = s[(s["feature_set"] == fset) & (s["pooling"] == pooling) & s["layer"].notna()]
            config = next(c for c in study.dataset.configs if c.name == name)
            mean = np.asarray(w).mean(axis=0)
            top = np.argsort(-mean)[:3]
            text = (f"- `{name}`: {m} {_f(row[f'{m}_pooled'])} (rank {row['rank']}"
                    + (", outside the confidence set for the best" if bool(row["worse_than_best"]) else "") + ")")
            if len(singles):
                b = singles.iloc[0]
                text += f"; best single layer `{b['config']}` ({b['model']}) {_f(b[f'{m}_pooled'])}"
            text += "; largest mean weights: " + ", ".join(
                f"layer {config.blocks[i].layer} {mean[i]:.2f}" for i in top) + f" (uniform {1 / len(mean):.2f})"
            lines.append(text)
        return lines

"""Model registry: classifier and regressor names -> scikit-learn Pipelines.

Every entry builds ``Pipeline([("scale", StandardScaler()), ("model", estimator)])`` (tree
ensembles skip the scaler, which they do not need). The pipeline is cloned and fitted inside
each training fold, so the scaler never sees a test item. Tuning grids (``configs/grids.yaml``)
name the estimator's parameters without the ``model__`` prefix.

scikit-learn and LightGBM are imported when a model is built, never at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from embedx.errors import ConfigError, Param
from embedx.probing.tasks import CLASSIFICATION, REGRESSION

__all__ = [
    "ModelSpec",
    "available_models",
    "build_model",
    "default_models",
    "estimator_types",
    "get_model",
    "parse_models",
    "register_model",
]


@dataclass(frozen=True)
class ModelSpec:
    """A registered model family.

    Attributes:
        name: registry key (what ``--models`` accepts).
        description: one line for help texts.
        classifier: ``(seed, class_weight, n_jobs) -> estimator`` or ``None``.
        regressor: ``(seed, n_jobs) -> estimator`` or ``None``.
        scale: whether the pipeline standardises features first.
        class_weight: whether the classifier honours ``class_weight="balanced"``.
        stacked: the estimator takes a ``(items, layers, dim)`` layer stack, not a feature
            matrix: it is the model of ``--weighted-layers`` configurations only, never a
            ``--models`` choice.
        fitted_types: ``module.Class`` of every object a fitted estimator holds besides plain
            numbers, arrays and its own class (trees, optimisers, label encoders, ...), also
            under the parameters a tuning grid may set: the saved model file
            (:mod:`embedx.probing.modelfile`) loads only these types.
    """

    name: str
    description: str
    classifier: Callable[..., Any] | None = None
    regressor: Callable[..., Any] | None = None
    scale: bool = True
    class_weight: bool = True
    stacked: bool = False
    fitted_types: tuple[str, ...] = ()
    tasks: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        tasks = []
        if self.classifier is not None:
            tasks.append(CLASSIFICATION)
        if self.regressor is not None:
            tasks.append(REGRESSION)
        object.__setattr__(self, "tasks", tuple(tasks))


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Add ``spec`` to the registry (replacing one of the same name)."""
    _REGISTRY[spec.name] = spec


def estimator_types() -> set[str]:
    """``module.Class`` of every registered estimator and of the objects it holds once fitted.

    Builds each model's classifier and regressor with default arguments to read its class, so it
    imports scikit-learn and LightGBM; what a saved model may contain (see
    :mod:`embedx.probing.modelfile`).
    """
    names: set[str] = set()
    for spec in _REGISTRY.values():
        built = []
        if spec.classifier is not None:
            built.append(spec.classifier(seed=0, class_weight=None, n_jobs=1))
        if spec.regressor is not None:
            built.append(spec.regressor(seed=0, n_jobs=1))
        names.update(f"{type(est).__module__}.{type(est).__qualname__}" for est in built)
        names.update(spec.fitted_types)
    return names


def available_models(task: str | None = None) -> list[str]:
    """``--models`` choices (optionally only those supporting ``task``), in order."""
    return [s.name for s in _REGISTRY.values() if (task is None or task in s.tasks) and not s.stacked]


def default_models(task: str) -> list[str]:
    """Models run when ``--models`` is not given: logistic regression / ridge regression."""
    return ["logreg"] if task == CLASSIFICATION else ["ridge"]


def get_model(name: str, task: str) -> ModelSpec:
    """Look a model up for ``task``.

    Raises:
        ConfigError: unknown name, or a model that does not support ``task``.
    """
    spec = _REGISTRY.get(name)
    if spec is None or task not in spec.tasks:
        raise ConfigError(
            f"unknown {task} model {name!r}; accepted: {', '.join(available_models(task))}"
        )
    return spec


def parse_models(text: str | list[str] | None, task: str) -> list[str]:
    """Parse ``--models`` (comma list, ``all``, or ``None`` for the default).

    Args:
        text: the option value.
        task: ``classification`` or ``regression``.

    Returns:
        Distinct model names in the given order.

    Raises:
        ConfigError: an unknown name or an empty list.
    """
    if text is None:
        return default_models(task)
    parts = text if isinstance(text, list) else text.split(",")
    names: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        if part == "all":
            names.extend(available_models(task))
            continue
        if get_model(part, task).stacked:
            raise ConfigError(f"model {part!r} is the model of ", Param("weighted_layers", switch=True), ", not a ", Param("models"),
                              f" choice; accepted: {', '.join(available_models(task))}")
        names.append(part)
    if not names:
        raise ConfigError("empty ", Param("models"), f"; accepted: {', '.join(available_models(task))}, all")
    return list(dict.fromkeys(names))


def build_model(
    name: str,
    task: str,
    *,
    seed: int = 0,
    class_weight: str | None = None,
    n_jobs: int = 1,
    params: dict[str, Any] | None = None,
):
    """Build an unfitted Pipeline for model ``name``.

    Args:
        name: registry key.
        task: ``classification`` or ``regression``.
        seed: random state of every random step.
        class_weight: ``None`` or ``"balanced"`` (classification only; ignored by models
            without class weights, see :attr:`ModelSpec.class_weight`).
        n_jobs: threads of threaded estimators (LightGBM, random forest).
        params: estimator parameters to set (names without the ``model__`` prefix).

    Returns:
        A :class:`sklearn.pipeline.Pipeline` with steps ``scale`` (when the model wants it)
        and ``model``.

    Raises:
        ConfigError: unknown model, bad class weight or unknown parameter.
    """
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    spec = get_model(name, task)
    if class_weight not in (None, "balanced"):
        raise ConfigError(f"unknown class weight {class_weight!r}; accepted: none, balanced")
    if task == CLASSIFICATION:
        est = spec.classifier(seed=seed, class_weight=class_weight, n_jobs=n_jobs)
    else:
        est = spec.regressor(seed=seed, n_jobs=n_jobs)
    if params:
        valid = est.get_params()
        bad = sorted(set(params) - set(valid))
        if bad:
            raise ConfigError(
                f"unknown parameter(s) {', '.join(bad)} for model {name!r}; "
                f"accepted: {', '.join(sorted(valid))}"
            )
        est.set_params(**params)
    steps = [("scale", StandardScaler())] if spec.scale else []
    steps.append(("model", est))
    return Pipeline(steps)


# ------------------------------------------------------------------------------- entries


def _logreg(seed, class_weight, n_jobs):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, max_iter=2000, class_weight=class_weight, random_state=seed)


def _linear_svm(seed, class_weight, n_jobs):
    from sklearn.svm import LinearSVC

    return LinearSVC(C=0.01, max_iter=5000, class_weight=class_weight, random_state=seed)


def _sgd_clf(seed, class_weight, n_jobs):
    from sklearn.linear_model import SGDClassifier

    # log loss: a logistic-regression probe trained by SGD; partial_fit streams minibatches
    return SGDClassifier(loss="log_loss", alpha=1e-4, class_weight=class_weight, random_state=seed)


def _softmax_clf(seed, class_weight, n_jobs):
    from embedx.probing.frames.softmax import SoftmaxClassifier

    return SoftmaxClassifier(class_weight=class_weight, random_state=seed)


def _rbf_svm(seed, class_weight, n_jobs):
    from sklearn.svm import SVC

    return SVC(kernel="rbf", C=1.0, gamma="scale", class_weight=class_weight, random_state=seed)


def _ridge_clf(seed, class_weight, n_jobs):
    from sklearn.linear_model import RidgeClassifier

    return RidgeClassifier(alpha=1.0, class_weight=class_weight)


def _knn_clf(seed, class_weight, n_jobs):
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=10, weights="distance")


def _rf_clf(seed, class_weight, n_jobs):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=300, class_weight=class_weight, n_jobs=n_jobs, random_state=seed
    )


#: what a fitted estimator holds (see ModelSpec.fitted_types); the paths are those skops names
_LABELS = ("sklearn.preprocessing._label.LabelBinarizer",)  # RidgeClassifier, MLPClassifier
#: neighbour search structures and the Minkowski-family metrics a grid's ``p`` / ``algorithm`` pick
_NEIGHBOURS = ("sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",
               *(f"sklearn.metrics._dist_metrics.{m}Distance64"
                 for m in ("Euclidean", "Manhattan", "Chebyshev", "Minkowski")))
_FOREST = ("sklearn.tree._classes.DecisionTreeClassifier", "sklearn.tree._classes.DecisionTreeRegressor",
           "sklearn.tree._tree.Tree")
_LGBM = ("lightgbm.basic.Booster", "sklearn.preprocessing._label.LabelEncoder", "collections.OrderedDict",
         "collections.defaultdict")
_MLP = ("sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
        "sklearn.neural_network._stochastic_optimizers.SGDOptimizer", "numpy.random.mtrand.RandomState",
        *_LABELS)

#: SGDClassifier keeps its loss object (log loss: the half-binomial loss of sklearn._loss)
_SGD = ("sklearn._loss._loss.CyHalfBinomialLoss",)

#: LightGBM settings shared by the classifier and the regressor
_LGBM_DEFAULTS = dict(
    n_estimators=100,
    learning_rate=0.1,
    num_leaves=15,
    max_bin=63,  # dense embeddings need few bins; 4x faster than 255 at 768 dims
    colsample_bytree=0.3,
    verbose=-1,
)


def _lgbm_clf(seed, class_weight, n_jobs):
    from lightgbm import LGBMClassifier

    return LGBMClassifier(**_LGBM_DEFAULTS, class_weight=class_weight, random_state=seed, n_jobs=n_jobs)


def _mlp_clf(seed, class_weight, n_jobs):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(
        hidden_layer_sizes=(256,),
        alpha=1e-3,
        early_stopping=True,
        max_iter=300,
        random_state=seed,
    )


def _ridge_reg(seed, n_jobs):
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0)


def _svr(seed, n_jobs):
    from sklearn.svm import SVR

    return SVR(kernel="rbf", C=1.0, gamma="scale")


def _knn_reg(seed, n_jobs):
    from sklearn.neighbors import KNeighborsRegressor

    return KNeighborsRegressor(n_neighbors=10, weights="distance")


def _rf_reg(seed, n_jobs):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=300, n_jobs=n_jobs, random_state=seed)


def _lgbm_reg(seed, n_jobs):
    from lightgbm import LGBMRegressor

    return LGBMRegressor(**_LGBM_DEFAULTS, random_state=seed, n_jobs=n_jobs)


def _mlp_reg(seed, n_jobs):
    from sklearn.neural_network import MLPRegressor

    return MLPRegressor(
        hidden_layer_sizes=(256,), alpha=1e-3, early_stopping=True, max_iter=300, random_state=seed
    )


def _weighted_clf(seed, class_weight, n_jobs):
    from embedx.probing.weighted import WeightedLayerClassifier

    # deterministic (fixed start, L-BFGS): no random step, so the seed is not needed
    return WeightedLayerClassifier(C=1.0, max_iter=300, class_weight=class_weight)


def _weighted_reg(seed, n_jobs):
    from embedx.probing.weighted import WeightedLayerRegressor

    return WeightedLayerRegressor(alpha=1.0, max_iter=300)


for _spec in (
    ModelSpec("logreg", "logistic regression (L2)", classifier=_logreg),
    ModelSpec("svm", "linear SVM (LinearSVC, C=0.01)", classifier=_linear_svm),
    ModelSpec("rbf_svm", "RBF-kernel SVM", classifier=_rbf_svm),
    ModelSpec("sgd", "logistic regression by SGD (one-vs-rest, log loss; partial_fit on frames)",
              classifier=_sgd_clf, fitted_types=_SGD),
    ModelSpec("softmax", "multinomial logistic regression by minibatch Adam (BLAS; the --frames "
              "default)", classifier=_softmax_clf),
    ModelSpec("ridge", "ridge classifier / ridge regression", classifier=_ridge_clf,
              regressor=_ridge_reg, fitted_types=_LABELS),
    ModelSpec("svr", "RBF-kernel support vector regression", regressor=_svr),
    ModelSpec("knn", "k nearest neighbours (k=10, distance-weighted)", classifier=_knn_clf,
              regressor=_knn_reg, class_weight=False, fitted_types=_NEIGHBOURS),
    ModelSpec("rf", "random forest (300 trees)", classifier=_rf_clf, regressor=_rf_reg,
              scale=False, fitted_types=_FOREST),
    ModelSpec("lgbm", "LightGBM (100 trees, 15 leaves, 63 bins, 30% features/tree)", classifier=_lgbm_clf, regressor=_lgbm_reg,
              scale=False, fitted_types=_LGBM),
    ModelSpec("mlp", "one-hidden-layer MLP (256 units, early stopping)", classifier=_mlp_clf,
              regressor=_mlp_reg, class_weight=False, fitted_types=_MLP),
    # scale=False: the probe standardises every layer itself, inside the training fold
    ModelSpec("weighted-linear", "softmax-weighted layer mix + logistic / ridge regression "
              "(--weighted-layers)", classifier=_weighted_clf, regressor=_weighted_reg, scale=False,
              stacked=True),
):
    register_model(_spec)

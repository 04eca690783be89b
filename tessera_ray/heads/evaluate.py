"""Scores of simple heads on fixed features: the probe used in training and in reports."""

from __future__ import annotations

import numpy as np

from tessera_ray.errors import UserInputError
from tessera_ray.extras import require

require("heads", "the downstream heads")


def linear_classifier(max_iter: int = 2000):
    """Standardised features into a multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=1.0))


def probe_accuracy(features: np.ndarray, classes: np.ndarray, test: np.ndarray | None = None,
                   folds: int = 5, seed: int = 0) -> dict:
    """Accuracy and macro F1 of a linear probe: fit on train, score on test; or k-fold without a split."""
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    features, classes = np.asarray(features, np.float64), np.asarray(classes)
    if test is not None and test.any() and (~test).any():
        head = linear_classifier().fit(features[~test], classes[~test])
        truth, predicted = classes[test], head.predict(features[test])
    else:
        counts = np.unique(classes, return_counts=True)[1]
        if counts.min() < folds:
            raise UserInputError(
                f"{folds}-fold cross-validation needs at least {folds} labels per class; "
                f"the smallest class has {counts.min()}"
            )
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        truth, predicted = classes, cross_val_predict(linear_classifier(), features, classes, cv=cv)
    return {"probe_accuracy": float(accuracy_score(truth, predicted)),
            "probe_macro_f1": float(f1_score(truth, predicted, average="macro"))}


CLASSIFIERS = ("logistic", "mlp")
REGRESSORS = ("ridge", "mlp")
CURVE = (1, 2, 5, 10, 20, 50)


def make_head(model: str, regression: bool = False, seed: int = 0):
    """A scikit-learn estimator: logistic/MLP classifier or ridge/MLP regressor, on standardised features."""
    from sklearn.linear_model import Ridge
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    choices = REGRESSORS if regression else CLASSIFIERS
    if model not in choices:
        raise UserInputError(f"unknown model {model!r}; choose {' or '.join(choices)}")
    if regression:
        est = (
            Ridge(alpha=1.0)
            if model == "ridge"
            else MLPRegressor(hidden_layer_sizes=(128,), max_iter=500, random_state=seed)
        )
        return make_pipeline(StandardScaler(), est)
    if model == "logistic":
        return linear_classifier()
    return make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(128,), max_iter=500, random_state=seed))


def check_folds(folds: int) -> int:
    """``folds`` when it is a k of k-fold cross-validation (2 or more); else a one-line error."""
    if folds < 2:
        raise UserInputError(
            f"--folds must be at least 2 (k-fold cross-validation holds out one of k parts), got {folds}"
        )
    return folds


def cross_validate(features: np.ndarray, target: np.ndarray, model: str = "logistic", regression: bool = False,
                   folds: int = 5, seed: int = 0) -> dict:
    """k-fold scores: accuracy and macro F1 for classes, R2 (and RMSE) for values."""
    from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

    check_folds(folds)
    features = np.asarray(features, np.float64)
    if regression:
        if len(target) < folds:
            raise UserInputError(f"{folds}-fold cross-validation needs at least {folds} points; got {len(target)}")
        cv = KFold(folds, shuffle=True, random_state=seed)
        predicted = cross_val_predict(make_head(model, True, seed), features, target, cv=cv)
        return {"folds": folds, "n": int(len(target)), "r2": float(r2_score(target, predicted)),
                "rmse": float(np.sqrt(mean_squared_error(target, predicted)))}
    names, counts = np.unique(target, return_counts=True)
    if len(names) < 2:
        raise UserInputError(f"classification needs at least two classes; the labels hold only {str(names[0])!r}")
    if counts.min() < folds:
        small = str(names[np.argmin(counts)])
        raise UserInputError(
            f"{folds}-fold cross-validation needs at least {folds} labels per class; "
            f"class {small!r} has {counts.min()} (add labels or lower --folds)"
        )
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    predicted = cross_val_predict(make_head(model, False, seed), features, target, cv=cv)
    return {"folds": folds, "n": int(len(target)), "classes": [str(n) for n in names],
            "accuracy": float(accuracy_score(target, predicted)),
            "macro_f1": float(f1_score(target, predicted, average="macro"))}


def label_efficiency(features: np.ndarray, target: np.ndarray, per_class=CURVE, model: str = "logistic",
                     test: np.ndarray | None = None, repeats: int = 5, seed: int = 0) -> list[dict]:
    """Score against labels per class: train on k random labels of each class, score on the rest.

    With a ``test`` mask the held-out points are fixed and training labels come
    from the others; each k is repeated with different draws and averaged. A k
    that leaves a class with no point to score on is skipped.
    """
    from sklearn.metrics import accuracy_score, f1_score

    features, target = np.asarray(features, np.float64), np.asarray(target)
    pool = np.flatnonzero(~test) if test is not None else np.arange(len(target))
    classes = np.unique(target)
    rows = []
    for k in per_class:
        scores = []
        for r in range(repeats):
            rng = np.random.default_rng([seed, k, r])
            chosen: list[int] = []
            too_few = False
            for c in classes:
                members = pool[target[pool] == c]
                too_few = len(members) < k + (test is None)
                if too_few:
                    break
                chosen.extend(rng.choice(members, k, replace=False))
            if too_few:
                break
            train = np.zeros(len(target), bool)
            train[chosen] = True
            evaluate = test.copy() if test is not None else ~train
            head = make_head(model, False, seed)
            head.fit(features[train], target[train])
            predicted = head.predict(features[evaluate])
            scores.append((accuracy_score(target[evaluate], predicted),
                           f1_score(target[evaluate], predicted, average="macro")))
        if len(scores) == repeats:
            acc, f1 = np.mean(scores, axis=0)
            rows.append({"per_class": int(k), "accuracy": float(acc), "macro_f1": float(f1), "repeats": repeats})
    return rows

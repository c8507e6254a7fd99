"""Linear and k-NN probes: how much of the labels the latents hold, from the training split to the test split.

The settings (docs/latents.md, "Probes"), fixed so a figure means the same everywhere:
- both standardise the latents with the training split's mean and standard deviation (scikit-learn's
  StandardScaler): a GON's latents are ~1e-3 in scale, and neither probe should depend on it;
- linear: scikit-learn's LogisticRegression, L2 penalty with C = 1.0, the lbfgs solver, max_iter = 1000,
  multinomial over the classes, no class weights;
- k-NN: scikit-learn's KNeighborsClassifier, k = 5 (`KNN_K`), Euclidean distance, uniform votes.
Both are deterministic: the same latents give the same accuracies.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from torch import Tensor

from gon_lightning.errors import UserError

KNN_K = 5
LINEAR_C = 1.0
LINEAR_MAX_ITER = 1000


def probe_accuracies(
    train_latents: Any, train_labels: Any, test_latents: Any, test_labels: Any, k: int = KNN_K
) -> dict[str, Any]:
    """{"linear_acc", "knn_acc", "knn_k"}: accuracies (in [0, 1]) on the test latents of probes fitted on the
    training latents, with the settings of this module's docstring."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    x_train, x_test = (np.asarray(a, dtype=np.float64) for a in (train_latents, test_latents))
    y_train, y_test = (np.asarray(a) for a in (train_labels, test_labels))
    if len(x_train) < k or len(np.unique(y_train)) < 2:
        raise UserError(f"probes need at least {k} training latents of two or more classes, got {len(x_train)}")
    scaler = StandardScaler().fit(x_train)
    x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    linear = LogisticRegression(C=LINEAR_C, max_iter=LINEAR_MAX_ITER)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        linear.fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    knn = KNeighborsClassifier(n_neighbors=k).fit(x_train, y_train)
    return {
        "linear_acc": float((linear.predict(x_test) == y_test).mean()),
        "knn_acc": float((knn.predict(x_test) == y_test).mean()),
        "knn_k": k,
        "linear_converged": converged,
        "settings": f"StandardScaler fitted on train; LogisticRegression(C={LINEAR_C}, lbfgs, max_iter="
        f"{LINEAR_MAX_ITER}); KNeighborsClassifier(k={k}, euclidean, uniform)",
        "train": len(x_train),
        "test": len(x_test),
    }


def run_probes(train: dict[str, Tensor], test: dict[str, Tensor], k: int = KNN_K) -> dict[str, Any]:
    """`probe_accuracies` of two splits as `store.read_split` returns them; a split without labels is refused."""
    if "labels" not in train or "labels" not in test:
        raise UserError("probes need labels, and this dataset has none: its latents were encoded without probes")
    return probe_accuracies(
        train["latents"].numpy(), train["labels"].numpy(), test["latents"].numpy(), test["labels"].numpy(), k
    )

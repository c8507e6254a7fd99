"""Check an encoded folder from outside gon-lightning: the probes its card reports are scikit-learn's on the latents
it wrote, with the settings docs/latents.md states; and other encodings of the same checkpoint hold the same
latents bit for bit.

The latents are read with pyarrow alone (no gon-lightning import), standardised with the training split's mean and
standard deviation, and probed with LogisticRegression(C=1.0, lbfgs, max_iter=1000) and 5-NN.

    python benchmarks/encode_check.py FOLDER [OTHER_FOLDER ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def read(folder: Path, split: str) -> dict[str, np.ndarray]:
    table = pq.read_table(sorted((folder / "data").glob(f"{split}-*.parquet")))
    out = {"latents": np.stack(table.column("latents").to_numpy(zero_copy_only=False)).astype(np.float32)}
    out |= {name: table.column(name).to_numpy() for name in ("sse", "labels") if name in table.column_names}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("others", type=Path, nargs="*", help="other encodings that must hold the same latents")
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    card = json.loads((args.folder / "latents.json").read_text())
    train, test = read(args.folder, "train"), read(args.folder, "test")
    scaler = StandardScaler().fit(train["latents"].astype(np.float64))
    x, x_test = (scaler.transform(s["latents"].astype(np.float64)) for s in (train, test))
    linear = LogisticRegression(C=1.0, max_iter=1000).fit(x, train["labels"])
    knn = KNeighborsClassifier(n_neighbors=card["knn_k"]).fit(x, train["labels"])
    linear_acc = float((linear.predict(x_test) == test["labels"]).mean())
    knn_acc = float((knn.predict(x_test) == test["labels"]).mean())
    print(f"{args.folder}: {len(x)} train, {len(x_test)} test latents of nz {x.shape[1]}")
    for name, ours, theirs in (("linear", linear_acc, "linear_acc"), (f"{card['knn_k']}-NN", knn_acc, "knn_acc")):
        print(f"{name}: card {card[theirs]:.4f}, scikit-learn here {ours:.4f}, equal: {ours == card[theirs]}")
    for other in args.others:
        same = all(
            np.array_equal(read(args.folder, split)[key], read(other, split)[key])
            for split in card["splits"]
            for key in ("latents", "sse", "labels")
        )
        print(f"{other}: the same latents, SSE and labels bit for bit: {same}")


if __name__ == "__main__":
    main()

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, roc_auc_score

from mtvision.metrics import ClassificationMetric, average_precision, build_metric


def preds_from(probs: list[list[float]]) -> list[dict]:
    return [{"probs": torch.tensor(p), "label": int(torch.tensor(p).argmax())} for p in probs]


def one_hot_ranked(order: list[int], n: int = 10) -> list[float]:
    """Probabilities where order[0] is the best class, order[1] the second..."""
    p = [0.0] * n
    for rank, c in enumerate(order):
        p[c] = 1.0 - 0.1 * rank
    return p


def test_single_label_perfect():
    targets = torch.tensor([3, 7, 0])
    m = ClassificationMetric(10)
    preds = preds_from([one_hot_ranked([int(t)]) for t in targets])
    m.update(preds, targets, torch.ones(3, dtype=bool))
    assert m.compute() == {"top1": 1.0, "top5": 1.0, "macro_f1": 1.0}


def test_single_label_top1_top5_hand_computed():
    targets = torch.tensor([1, 2, 3, 4])
    probs = [
        one_hot_ranked([1, 0]),  # top-1 hit
        one_hot_ranked([2]),  # top-1 hit
        one_hot_ranked([0, 5, 6, 7, 3]),  # rank 5: top-5 hit only
        one_hot_ranked([0, 5, 6, 7, 8, 4]),  # rank 6: miss
    ]
    m = ClassificationMetric(10)
    m.update(preds_from(probs), targets, torch.ones(4, dtype=bool))
    out = m.compute()
    assert out["top1"] == pytest.approx(2 / 4) and out["top5"] == pytest.approx(3 / 4)


def test_few_classes_have_no_top5_and_unlabelled_images_are_skipped():
    m = ClassificationMetric(3)
    m.update(preds_from([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]]),
             torch.tensor([0, 1, -1]), torch.ones(3, dtype=bool))
    # Predictions 0, 2 for targets 0, 1: F1 1 (class 0), 0 (class 1), 0 (class 2, predicted).
    assert m.compute() == {"top1": 0.5, "macro_f1": pytest.approx(1 / 3)}
    # Top-k exists only with more classes than k (with k >= C it is 1 by construction).
    five = ClassificationMetric(5)
    five.update(preds_from([[0.1, 0.2, 0.3, 0.4, 0.0]]), torch.tensor([4]))
    assert "top5" not in five.compute()
    three = ClassificationMetric(5, top_k=3)
    three.update(preds_from([[0.1, 0.2, 0.3, 0.4, 0.0], [0.1, 0.2, 0.3, 0.4, 0.0]]),
                 torch.tensor([1, 4]))
    assert three.compute()["top3"] == pytest.approx(0.5)


def test_present_mask_excludes_images():
    m = ClassificationMetric(3)
    m.update(preds_from([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]]), torch.tensor([0, 1]),
             torch.tensor([True, False]))
    assert m.compute() == {"top1": 1.0, "macro_f1": 1.0}
    m.reset()
    assert m.compute() == {"top1": 0.0, "macro_f1": 0.0}


def test_average_precision_hand_computed():
    # Ranked labels 1 0 1 0: precision at the positives 1/1 and 2/3 -> AP = (1 + 2/3) / 2.
    ap = average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 0]))
    assert ap == pytest.approx(5 / 6)
    # A tie enters together: one operating point with P = 1/2, R = 1.
    assert average_precision(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(0.5)
    assert average_precision(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == pytest.approx(0.5)
    assert math.isnan(average_precision(torch.tensor([0.5]), torch.tensor([0])))


def test_multi_label_map_and_top1_hand_computed():
    # class 0 scores .9 .8 .7 .6 labels 1 0 1 0 -> AP 5/6
    # class 1 scores .1 .2 .3 .95 labels 0 0 0 1 -> AP 1
    # class 2 has no positive -> left out of the mean.
    probs = [[0.9, 0.1, 0.5], [0.8, 0.2, 0.0], [0.7, 0.3, 0.0], [0.6, 0.95, 0.0]]
    targets = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float32)
    m = ClassificationMetric(3, multi_label=True)
    m.update(preds_from(probs[:2]), targets[:2], torch.ones(2, dtype=bool))
    m.update(preds_from(probs[2:]), targets[2:], torch.ones(2, dtype=bool))
    out = m.compute()
    assert out["mAP"] == pytest.approx((5 / 6 + 1) / 2)
    # argmax classes 0, 0, 0, 1 -> positive for images 0, 2, 3.
    assert out["top1"] == pytest.approx(3 / 4)


def test_multi_label_perfect_and_present():
    targets = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1]], dtype=torch.float32)
    probs = (targets * 0.8 + 0.1).tolist()
    bad = [[0.0, 0.0, 1.0]] * 3
    m = ClassificationMetric(3, multi_label=True)
    m.update(preds_from(probs) + preds_from(bad[:1]), torch.cat([targets, targets[1:2]]),
             torch.tensor([True, True, True, False]))
    assert m.compute() == {"mAP": 1.0, "top1": 1.0, "macro_f1": 1.0, "roc_auc": 1.0}


def test_build_metric_cls():
    m = build_metric("cls", num_classes=4, class_names=["a", "b", "c", "d"], multi_label=True)
    assert isinstance(m, ClassificationMetric) and m.multi_label and m.num_classes == 4


def test_macro_f1_hand_computed():
    # Targets 0 0 1 2, predictions 0 1 1 2: class 0 P 1 R 1/2, class 1 P 1/2 R 1 (F1 2/3 each),
    # class 2 F1 1; classes 3..9 neither occur nor are predicted and are not averaged in.
    targets = torch.tensor([0, 0, 1, 2])
    m = ClassificationMetric(10)
    m.update(preds_from([one_hot_ranked([c]) for c in (0, 1, 1, 2)]), targets)
    assert m.compute()["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_single_label_against_sklearn():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(12), size=200)
    targets = rng.integers(0, 12, 200)
    targets[rng.random(200) < 0.1] = -1
    m = ClassificationMetric(12)
    for i in range(0, 200, 64):
        m.update(preds_from(probs[i:i + 64].tolist()), torch.from_numpy(targets[i:i + 64]))
    out = m.compute()
    keep = targets >= 0
    y, p = targets[keep], probs[keep].astype(np.float32)
    ranks = (-p).argsort(1, kind="stable")
    assert out["top1"] == pytest.approx((ranks[:, 0] == y).mean())
    assert out["top5"] == pytest.approx((ranks[:, :5] == y[:, None]).any(1).mean())
    assert out["macro_f1"] == pytest.approx(f1_score(y, ranks[:, 0], average="macro"))


def test_multi_label_f1_and_roc_auc_hand_computed():
    # class 0 scores .9 .8 .7 .6, labels 1 0 1 0: pairs (pos > neg) 3 of 4 -> AUC 3/4;
    #   decisions (>= .5) 1 1 1 1 -> P 1/2, R 1, F1 2/3.
    # class 1 scores .1 .2 .3 .95, labels 0 0 0 1: AUC 1, decisions 0 0 0 1 -> F1 1.
    # class 2 no positive label: no AUC; predicted once (.5) -> F1 0.
    # class 3 positive everywhere: no AUC; F1 of decisions 0 1 1 1 -> P 1, R 3/4 -> 6/7.
    probs = [[0.9, 0.1, 0.5, 0.2], [0.8, 0.2, 0.0, 0.6], [0.7, 0.3, 0.0, 0.7],
             [0.6, 0.95, 0.0, 0.8]]
    targets = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 1], [1, 0, 0, 1], [0, 1, 0, 1]],
                           dtype=torch.float32)
    m = ClassificationMetric(4, multi_label=True)
    m.update(preds_from(probs), targets)
    out = m.compute()
    assert out["roc_auc"] == pytest.approx((3 / 4 + 1) / 2)
    assert out["macro_f1"] == pytest.approx((2 / 3 + 1 + 0 + 6 / 7) / 4)


def test_multi_label_against_sklearn():
    rng = np.random.default_rng(3)
    n, c = 120, 6
    y = (rng.random((n, c)) < 0.3).astype(np.int64)
    y[:, 5] = 0  # a class without positives: left out of ROC-AUC
    scores = np.clip(y * 0.3 + rng.random((n, c)) * 0.7, 0, 1).astype(np.float32)
    m = ClassificationMetric(c, multi_label=True)
    m.update(preds_from(scores[:50].tolist()), torch.from_numpy(y[:50]).float())
    m.update(preds_from(scores[50:].tolist()), torch.from_numpy(y[50:]).float())
    out = m.compute()
    pred = (scores >= 0.5).astype(np.int64)
    seen = [k for k in range(c) if y[:, k].any() or pred[:, k].any()]
    assert out["macro_f1"] == pytest.approx(
        f1_score(y, pred, labels=seen, average="macro", zero_division=0))
    assert out["roc_auc"] == pytest.approx(roc_auc_score(y[:, :5], scores[:, :5], average="macro"))


def test_multi_label_roc_auc_undefined_is_nan():
    m = ClassificationMetric(2, multi_label=True)
    assert math.isnan(m.compute()["roc_auc"])
    m.update(preds_from([[0.9, 0.2], [0.3, 0.1]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    out = m.compute()
    assert math.isnan(out["roc_auc"]) and out["mAP"] == 1.0

"""A deterministic exact solver for the BSDS pixel correspondence (``correspondPixels``).

The benchmark's ``matchEdgeMaps`` (BSDS500 ``match.cc``) links a predicted pixel and a boundary
pixel when they lie within ``r = max_dist x image diagonal`` (``u*u + v*v <= r*r``), at the
integer cost ``rint(100 x distance)``; every pixel left unmatched pays the outlier cost
``ow = ceil(100 x outlier_cost)`` with ``outlier_cost = 100 x r``. With k matched pairs the
assignment it solves costs ``sum(w) + (n1 + n2 - k) x ow``, so its minimum is the matching
that minimises ``sum over matched pairs (w - ow)``. BSDS solves that with CSA on a graph whose
outlier arcs are a random sparse subset (clock-seeded), so its answer can miss the optimum by
a few pixels and varies from run to run.

Here the same objective is solved exactly and deterministically: each pixel either takes a
pixel of the other map within ``r`` or its own private "unmatched" twin (see :func:`_solve`),
which is the same objective up to a constant. The graph is built from pixel lists (no
full-image passes), split into connected components, and the components not seen at a
previous threshold are solved together by scipy's sparse assignment solver
(``scipy.sparse.csgraph.min_weight_full_bipartite_matching``, LAPJVsp).
A component's solution depends only on its predicted pixels (its boundary pixels and arcs
follow from them), so a component that reappears unchanged at another threshold reuses it:
exact, and most of a soft map's components are unchanged between neighbouring thresholds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components, min_weight_full_bipartite_matching

# match.cc: "CSA code needs integer weights. Use this multiplier to convert".
WEIGHT_MULTIPLIER = 100
# pyEdgeEval's / BSDS's default outlier cost, in units of the matching radius.
OUTLIER_COST = 100.0


def _offsets(radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dy, dx, integer weight) of the pixel offsets within ``radius`` (match.cc's test)."""
    r = int(math.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    d2 = (dy * dy + dx * dx).ravel()
    keep = d2 <= radius * radius
    weight = np.rint(np.sqrt(d2[keep]) * WEIGHT_MULTIPLIER).astype(np.int64)
    return dy.ravel()[keep], dx.ravel()[keep], weight


def _arcs(pred_yx: np.ndarray, gt: np.ndarray, radius: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Arcs (pred index, gt index, weight) between pixels within ``radius``; gt count.

    For each offset the boundary pixel at ``pred + offset`` is looked up in an index image of
    ``gt`` padded by the radius: work proportional to (#pred pixels x #offsets).
    """
    h, w = gt.shape
    dy, dx, weight = _offsets(radius)
    r = int(math.ceil(radius))
    index = np.full((h + 2 * r, w + 2 * r), -1, dtype=np.int64)
    gy, gx = np.nonzero(gt)
    index[gy + r, gx + r] = np.arange(gy.size)
    flat = index.ravel()
    base = (pred_yx[:, 0] + r) * (w + 2 * r) + (pred_yx[:, 1] + r)
    hits = flat[base[:, None] + (dy * (w + 2 * r) + dx)[None, :]]  # [n_pred, n_offsets]
    p_idx, o_idx = np.nonzero(hits >= 0)
    return p_idx, hits[p_idx, o_idx], weight[o_idx], int(gy.size)


def _solve(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray, n_rows: int, n_cols: int,
           outlier: int) -> np.ndarray:
    """Columns matched to each row (-1: unmatched) of the minimum-cost assignment.

    ``rows``/``cols``/``weight``: arcs of a bipartite graph with 0-based, dense node ids.
    Solved as a square problem: rows = the rows then one "unmatched" twin per column, columns
    = the columns then one twin per row. A row takes a column (cost 2w) or its own twin
    (``outlier``); a column is taken by a row or by its own twin (``outlier``); the twins left
    pair up along the arcs at cost 0. A perfect matching with k real pairs costs
    ``2 (sum(w) - k x outlier) + const``: the correspondence's objective. Every cost is shifted
    by 1 (a perfect matching has a fixed size) so none is a zero, which a sparse matrix would
    not store. (Measured ~30 % faster than the rectangular form with one twin per row.)
    """
    n = n_rows + n_cols
    r = np.concatenate([rows, np.arange(n_rows), n_rows + np.arange(n_cols), n_rows + cols])
    c = np.concatenate([cols, n_cols + np.arange(n_rows), np.arange(n_cols), n_cols + rows])
    v = np.concatenate([2 * weight, np.full(n, outlier, dtype=np.int64),
                        np.zeros(rows.size, dtype=np.int64)]) + 1
    graph = csr_matrix((v.astype(np.float64), (r, c)), shape=(n, n))
    row, col = min_weight_full_bipartite_matching(graph)
    match = np.full(n_rows, -1, dtype=np.int64)
    real = (row < n_rows) & (col < n_cols)
    match[row[real]] = col[real]
    return match


class AnnotatorMatcher:
    """Exact correspondences between the thinned maps of one image and one annotator.

    ``pred_yx`` int[N, 2]: every predicted pixel at any threshold (the union), so the arcs are
    found once; :meth:`match` takes the bool[N] subset present at one threshold and returns
    (boundary pixels matched, bool[N] predicted pixels matched). Components met before are
    reused from a cache keyed by their predicted pixels.
    """

    def __init__(self, pred_yx: np.ndarray, gt: np.ndarray, max_dist: float,
                 outlier_cost: float = OUTLIER_COST) -> None:
        h, w = gt.shape
        radius = max_dist * math.sqrt(h * h + w * w)
        self.n_pred = len(pred_yx)
        self.p, self.g, self.w, self.n_gt = _arcs(pred_yx, gt, radius)
        self.outlier = int(math.ceil(outlier_cost * radius * WEIGHT_MULTIPLIER))
        self.cache: dict[bytes, tuple[int, np.ndarray]] = {}

    def match(self, present: np.ndarray) -> tuple[int, np.ndarray]:
        matched = np.zeros(self.n_pred, dtype=bool)
        live = present[self.p]
        p, g, w = self.p[live], self.g[live], self.w[live]
        if p.size == 0:
            return 0, matched
        # Components of the arc graph: pred nodes 0..n_pred-1, gt nodes after them.
        n = self.n_pred + self.n_gt
        graph = coo_matrix((np.ones(p.size, dtype=np.int8), (p, self.n_pred + g)),
                           shape=(n, n)).tocsr()
        _, label = connected_components(graph, directed=False)
        # Predicted pixels with an arc, grouped by component (ascending index within each).
        nodes = np.unique(p)
        order = np.argsort(label[nodes], kind="stable")
        nodes = nodes[order]
        comp = label[nodes]
        starts = np.flatnonzero(np.r_[True, comp[1:] != comp[:-1]])
        ends = np.r_[starts[1:], nodes.size]
        found = 0
        todo: list[int] = []  # component labels to solve
        keys: dict[int, bytes] = {}
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            key = nodes[s:e].tobytes()
            hit = self.cache.get(key)
            if hit is None:
                keys[int(comp[s])] = key
                todo.append(int(comp[s]))
            else:
                found += hit[0]
                matched[hit[1]] = True
        if todo:
            found += self._solve_components(p, g, w, label, todo, keys, matched)
        return found, matched

    def _solve_components(self, p: np.ndarray, g: np.ndarray, w: np.ndarray,
                          label: np.ndarray, todo: list[int], keys: dict[int, bytes],
                          matched: np.ndarray) -> int:
        """Solve the listed components in one call; cache and record each one's result."""
        wanted = np.zeros(label.max() + 1, dtype=bool)
        wanted[todo] = True
        sel = wanted[label[p]]
        p, g, w = p[sel], g[sel], w[sel]
        rows, row_id = np.unique(p, return_inverse=True)
        cols, col_id = np.unique(g, return_inverse=True)
        col = _solve(row_id, col_id, w, rows.size, cols.size, self.outlier)
        hit = col >= 0
        matched[rows[hit]] = True
        # Split the answer back into components for the cache.
        row_comp = label[rows]
        order = np.argsort(row_comp, kind="stable")
        bounds = np.flatnonzero(np.r_[True, row_comp[order][1:] != row_comp[order][:-1]])
        for s, e in zip(bounds.tolist(), np.r_[bounds[1:], order.size].tolist(), strict=True):
            members = order[s:e]
            key = keys[int(row_comp[members[0]])]
            self.cache[key] = (int(hit[members].sum()), rows[members[hit[members]]])
        return int(hit.sum())

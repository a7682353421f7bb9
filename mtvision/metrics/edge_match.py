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
full-image passes) and split into connected components. A component's solution depends only
on its predicted pixels (its boundary pixels and arcs follow from them), so the components of
all thresholds are found in one pass, the distinct ones solved by a sparse Jonker-Volgenant
solver (``lap.lapmod``, LAPMOD; small components packed into parts of about ``PART_SIZE``
nodes, one call per part), and each answer is shared by every threshold where its component
reappears unchanged: exact, and most of a soft map's components are unchanged between
neighbouring thresholds.
"""

from __future__ import annotations

import math

import numpy as np
from lap import lapmod
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

# match.cc: "CSA code needs integer weights. Use this multiplier to convert".
WEIGHT_MULTIPLIER = 100
# pyEdgeEval's / BSDS's default outlier cost, in units of the matching radius.
OUTLIER_COST = 100.0
# Nodes per solver call when small components are solved together (see _solve).
PART_SIZE = 1024


def _offsets(radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dy, dx, integer weight) of the pixel offsets within ``radius`` (match.cc's test)."""
    r = int(math.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    d2 = (dy * dy + dx * dx).ravel()
    keep = d2 <= radius * radius
    weight = np.rint(np.sqrt(d2[keep]) * WEIGHT_MULTIPLIER).astype(np.int64)
    return dy.ravel()[keep], dx.ravel()[keep], weight


def _arcs(pred_yx: np.ndarray, gt: np.ndarray, radius: float
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arcs (pred index, gt index, weight) between pixels within ``radius``.

    For each offset the boundary pixel at ``pred + offset`` is looked up in an index image of
    ``gt`` padded by the radius: work proportional to (#pred pixels x #offsets). The arcs come
    sorted by pred index.
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
    return p_idx, hits[p_idx, o_idx], weight[o_idx]


def _solve(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray, part: np.ndarray,
           n_rows: int, n_cols: int, outlier: int) -> np.ndarray:
    """bool[n_rows]: which rows the minimum-cost assignment matches to a column.

    ``rows``/``cols``/``weight``: arcs of a bipartite graph with 0-based, dense node ids;
    ``part`` int[n_rows + n_cols]: a part id per node (rows, then columns), such that no arc
    joins two parts. Each part is solved as a square problem: rows = its rows then one
    "unmatched" twin per column, columns = its columns then one twin per row. A row takes a
    column (cost 2w) or its own twin (``outlier``); a column is taken by a row or by its own
    twin (``outlier``); the twins left pair up along the arcs at cost 0. A perfect matching
    with k real pairs costs ``2 (sum(w) - k x outlier) + const``: the correspondence's
    objective. Every cost is an integer, exact in the solver's float64.

    The parts are solved one solver call each: LAPMOD's work grows with (free rows x problem
    size), so one call over many independent parts costs far more than the parts alone.
    The parts' square problems are laid out one after another in one CSR matrix, so a call
    only slices it.
    """
    # Number the nodes part by part: part b's square problem occupies [start[b], start[b+1]).
    row_part, col_part = part[:n_rows], part[n_rows:]
    n_parts = int(part.max()) + 1
    size = np.bincount(part, minlength=n_parts)
    start = np.r_[0, np.cumsum(size)]
    row_at = _rank_within(row_part, n_parts)  # a row's rank among its part's rows
    col_at = _rank_within(col_part, n_parts)
    n_rows_of = np.bincount(row_part, minlength=n_parts)
    n_cols_of = np.bincount(col_part, minlength=n_parts)
    row_node = start[row_part] + row_at  # a row
    col_node = start[col_part] + col_at  # a column
    col_twin = start[col_part] + n_rows_of[col_part] + col_at  # a column's twin row
    row_twin = start[row_part] + n_cols_of[row_part] + row_at  # a row's twin column
    r = np.concatenate([row_node[rows], row_node, col_twin, col_twin[cols]])
    c = np.concatenate([col_node[cols], row_twin, col_node, row_twin[rows]])
    v = np.concatenate([2 * weight, np.full(n_rows + n_cols, outlier, dtype=np.int64),
                        np.zeros(rows.size, dtype=np.int64)]).astype(np.float64)
    n = n_rows + n_cols
    graph = csr_matrix((v, (r, c)), shape=(n, n))
    graph.sort_indices()  # LAPMOD wants each row's columns sorted
    data, indptr, indices = graph.data, graph.indptr, graph.indices
    col = np.empty(n, dtype=np.int64)
    for s, e in zip(start[:-1].tolist(), start[1:].tolist(), strict=True):
        lo, hi = indptr[s], indptr[e]
        x, _ = lapmod(e - s, data[lo:hi], indptr[s : e + 1] - lo, indices[lo:hi] - s,
                      return_cost=False)
        col[s:e] = x + s
    # A part's columns come before its rows' twins.
    return col[row_node] < start[row_part] + n_cols_of[row_part]


def _rank_within(part: np.ndarray, n_parts: int) -> np.ndarray:
    """Each element's rank among the elements of its part (in index order)."""
    order = np.argsort(part, kind="stable")
    first = np.r_[0, np.cumsum(np.bincount(part, minlength=n_parts))[:-1]]
    rank = np.empty(part.size, dtype=np.int64)
    rank[order] = np.arange(part.size) - first[part[order]]
    return rank


class AnnotatorMatcher:
    """Exact correspondences between the thinned maps of one image and one annotator.

    ``pred_yx`` int[N, 2]: every predicted pixel at any threshold (the union), so the arcs are
    found once. :meth:`match_all` takes the bool[T, N] subsets present at T thresholds and
    returns, per threshold, the boundary pixels matched and the predicted pixels matched.
    Solved components are kept, keyed by their predicted pixels, for later calls too.
    """

    def __init__(self, pred_yx: np.ndarray, gt: np.ndarray, max_dist: float,
                 outlier_cost: float = OUTLIER_COST) -> None:
        h, w = gt.shape
        radius = max_dist * math.sqrt(h * h + w * w)
        self.n_pred = len(pred_yx)
        self.arc_pixel, g, self.w = _arcs(pred_yx, gt, radius)
        # Only pixels with an arc can match: the graph's nodes are those, numbered densely.
        self.nodes, self.p = np.unique(self.arc_pixel, return_inverse=True)
        gt_nodes, self.g = np.unique(g, return_inverse=True)
        self.n_gt = gt_nodes.size
        self.outlier = int(math.ceil(outlier_cost * radius * WEIGHT_MULTIPLIER))
        self.cache: dict[bytes, tuple[int, np.ndarray]] = {}

    def match(self, present: np.ndarray) -> tuple[int, np.ndarray]:
        """(boundary pixels matched, bool[N] predicted pixels matched) of one threshold."""
        found, matched = self.match_all(present[None])
        return int(found[0]), matched[0]

    def match_all(self, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """int[T] boundary pixels matched and bool[T, N] predicted pixels matched."""
        t_count = present.shape[0]
        found = np.zeros(t_count, dtype=np.int64)
        matched = np.zeros((t_count, self.n_pred), dtype=bool)
        np_, ng = self.nodes.size, self.n_gt
        k, e = np.nonzero(present[:, self.arc_pixel])  # live arcs of every threshold
        if k.size == 0:
            return found, matched
        # One graph holding every threshold's copy: pred node (k, i) -> k*np_ + i, boundary
        # node (k, j) -> t_count*np_ + k*ng + j. Its components never span two thresholds.
        pn = k * np_ + self.p[e]
        gn = t_count * np_ + k * ng + self.g[e]
        n = t_count * (np_ + ng)
        graph = csr_matrix((np.ones(pn.size, dtype=np.int8), (pn, gn)), shape=(n, n))
        _, label = connected_components(graph, directed=False)
        # Live pred nodes grouped by component; pn is sorted, so each group is in index order.
        live = pn[np.r_[True, pn[1:] != pn[:-1]]]
        order = np.argsort(label[live], kind="stable")
        live = live[order]
        comp = label[live]
        starts = np.flatnonzero(np.r_[True, comp[1:] != comp[:-1]])
        ends = np.r_[starts[1:], live.size]
        local = live % np_
        seen: list[tuple[int, bytes]] = []  # (threshold, key) of every component
        todo: dict[bytes, int] = {}  # key -> component label, for those not solved before
        for s, end in zip(starts.tolist(), ends.tolist(), strict=True):
            key = local[s:end].tobytes()
            seen.append((int(live[s] // np_), key))
            if key not in self.cache and key not in todo:
                todo[key] = int(comp[s])
        if todo:
            self._solve_components(pn, gn, e, label, todo)
        hit_t: list[np.ndarray] = []
        hit_i: list[np.ndarray] = []
        for t, key in seen:
            count, members = self.cache[key]
            found[t] += count
            hit_t.append(np.full(members.size, t))
            hit_i.append(members)
        matched[np.concatenate(hit_t), np.concatenate(hit_i)] = True
        return found, matched

    def _solve_components(self, pn: np.ndarray, gn: np.ndarray, e: np.ndarray,
                          label: np.ndarray, todo: dict[bytes, int]) -> None:
        """Solve the listed components (packed into parts, see :func:`_solve`) and cache each
        one's answer."""
        wanted = np.zeros(label.max() + 1, dtype=bool)
        wanted[list(todo.values())] = True
        sel = wanted[label[pn]]
        rows, row_id = np.unique(pn[sel], return_inverse=True)
        cols, col_id = np.unique(gn[sel], return_inverse=True)
        # Small components go to the solver together, up to about PART_SIZE nodes a call.
        node_comp = np.concatenate([label[rows], label[cols]])
        comps, comp_of, comp_size = np.unique(node_comp, return_inverse=True, return_counts=True)
        by_size = np.argsort(comp_size, kind="stable")
        part_of = np.empty(comps.size, dtype=np.int64)
        part_of[by_size] = np.cumsum(comp_size[by_size]) // PART_SIZE
        part = np.unique(part_of, return_inverse=True)[1][comp_of]
        hit = _solve(row_id, col_id, self.w[e[sel]], part, rows.size, cols.size, self.outlier)
        # Split the answer back into components, in the same (sorted) order as their keys.
        row_comp = label[rows]
        order = np.argsort(row_comp, kind="stable")
        bounds = np.flatnonzero(np.r_[True, row_comp[order][1:] != row_comp[order][:-1]])
        key_of = {lab: key for key, lab in todo.items()}
        union = self.nodes[rows % self.nodes.size]  # union index of each row's pixel
        for s, end in zip(bounds.tolist(), np.r_[bounds[1:], order.size].tolist(), strict=True):
            members = order[s:end]
            took = members[hit[members]]
            self.cache[key_of[int(row_comp[members[0]])]] = (int(took.size), union[took])

"""Tests of ``bridge.domain.plan``: pure logic, no MPI, fast."""

from __future__ import annotations

import itertools
import re
from fractions import Fraction

import numpy as np
import pytest

from bridge.domain.plan import (
    Box,
    Plan,
    Segment,
    assemble_global_reference,
    check_tiling,
    choose_process_grid,
    pack,
    periodicity,
    plan_routes,
    server_blocks,
    split_1d,
    unpack,
)

GRIDS = [7, 10, 13, 64]
MODEL_DECOMPS = [(1, 1), (2, 1), (1, 2), (2, 2), (3, 1), (3, 2), (4, 4)]
SERVER_COUNTS = [1, 2, 3, 4, 5]
HALOS = [0, 1, 3, 5]
NZ = 3


def model_decomposition(nx: int, ny: int, jpni: int, jpnj: int) -> list[Box]:
    """NEMO-style jpni x jpnj decomposition, rank order i fastest."""
    return [
        Box(i0, i1, j0, j1) for (j0, j1) in split_1d(ny, jpnj) for (i0, i1) in split_1d(nx, jpni)
    ]


def random_guillotine(nx: int, ny: int, pieces: int, rng: np.random.Generator) -> list[Box]:
    """An irregular tiling by repeated random cuts of random boxes."""
    boxes = [Box(0, nx, 0, ny)]
    for _ in range(pieces - 1):
        order = rng.permutation(len(boxes))
        for k in order:
            box = boxes[k]
            axes = [a for a, n in (("i", box.nx), ("j", box.ny)) if n > 1]
            if not axes:
                continue
            axis = axes[rng.integers(len(axes))]
            if axis == "i":
                cut = int(rng.integers(box.i0 + 1, box.i1))
                new = [Box(box.i0, cut, box.j0, box.j1), Box(cut, box.i1, box.j0, box.j1)]
            else:
                cut = int(rng.integers(box.j0 + 1, box.j1))
                new = [Box(box.i0, box.i1, box.j0, cut), Box(box.i0, box.i1, cut, box.j1)]
            boxes[k : k + 1] = new
            break
    rng.shuffle(boxes)
    return boxes


def expected_sent_cells(plan: Plan, s: int) -> int:
    """Cells of server s's haloed block that must arrive (all of them along periodic axes)."""
    px, py = periodicity(plan.boundary)
    hbox = plan.haloed_box(s)
    ni = hbox.nx if px else min(hbox.i1, plan.nx) - max(hbox.i0, 0)
    nj = hbox.ny if py else min(hbox.j1, plan.ny) - max(hbox.j0, 0)
    return ni * nj


def round_trip(plan: Plan, field: np.ndarray) -> None:
    """Push ``field`` through the plan both ways and compare with the references."""
    locals_ = [field[(slice(None), *b.slices())].copy() for b in plan.model_boxes]
    blocks = [
        np.zeros((field.shape[0], *plan.haloed_shape(s)), field.dtype) for s in range(plan.n_server)
    ]
    for (r, s), segments in plan.sends.items():
        buf = pack(locals_[r], segments)
        assert buf.ndim == 1 and buf.flags.c_contiguous and buf.dtype == field.dtype
        assert buf.size == field.shape[0] * plan.send_cells(r, s)
        unpack(buf, segments, blocks[s])
    for s, sbox in enumerate(plan.server_boxes):
        ref = assemble_global_reference(field, sbox, plan.halo, plan.boundary)
        np.testing.assert_array_equal(blocks[s], ref, err_msg=f"server {s} block")
        got = sum(plan.send_cells(r, s) for r in plan.server_recv_peers(s))
        assert got == expected_sent_cells(plan, s), f"server {s}: cells sent twice or missing"

    # return path: each server sends back its interior (here: the input interior, negated)
    h = plan.halo
    outs = [np.full_like(loc, -1 if field.dtype.kind != "u" else 1) for loc in locals_]
    for (s, r), segments in plan.returns.items():
        interior = -blocks[s][:, h : blocks[s].shape[1] - h, h : blocks[s].shape[2] - h]
        assert interior.shape[1:] == plan.interior_shape(s)
        buf = pack(interior, segments)
        assert buf.size == field.shape[0] * plan.return_cells(s, r)
        unpack(buf, segments, outs[r])
    for r, loc in enumerate(locals_):
        np.testing.assert_array_equal(outs[r], -loc, err_msg=f"model {r} return")
        assert sum(plan.return_cells(s, r) for s in plan.model_recv_peers(r)) == loc[0].size


@pytest.mark.parametrize("boundary", ["closed", "periodic", "periodic_x", "periodic_y"])
@pytest.mark.parametrize("halo", HALOS)
def test_round_trip_matches_reference(boundary: str, halo: int) -> None:
    rng = np.random.default_rng(1000 + halo)
    for nx, ny in itertools.product(GRIDS, GRIDS):
        field = rng.standard_normal((NZ, ny, nx))
        for (jpni, jpnj), m in itertools.product(MODEL_DECOMPS, SERVER_COUNTS):
            plan = plan_routes(
                nx,
                ny,
                model_decomposition(nx, ny, jpni, jpnj),
                server_blocks(nx, ny, m),
                halo,
                boundary,
            )
            round_trip(plan, field)


@pytest.mark.parametrize("boundary", ["closed", "periodic"])
def test_round_trip_irregular_tilings(boundary: str) -> None:
    rng = np.random.default_rng(7)
    for _ in range(60):
        nx, ny = (int(v) for v in rng.integers(6, 20, size=2))
        halo = int(rng.integers(0, min(nx, ny)))
        models = random_guillotine(nx, ny, int(rng.integers(1, 12)), rng)
        servers = random_guillotine(nx, ny, int(rng.integers(1, 7)), rng)
        plan = plan_routes(nx, ny, models, servers, halo, boundary)
        round_trip(plan, rng.standard_normal((2, ny, nx)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.uint8, np.complex64])
def test_round_trip_any_dtype(dtype: type) -> None:
    rng = np.random.default_rng(3)
    field = (rng.integers(1, 200, size=(4, 13, 10))).astype(dtype)
    plan = plan_routes(
        10, 13, model_decomposition(10, 13, 3, 2), server_blocks(10, 13, 4), 3, "periodic"
    )
    round_trip(plan, field)


def test_single_level_and_many_levels() -> None:
    rng = np.random.default_rng(5)
    plan = plan_routes(
        10, 7, model_decomposition(10, 7, 2, 2), server_blocks(10, 7, 3), 2, "periodic"
    )
    for nz in (1, 17):
        round_trip(plan, rng.standard_normal((nz, 7, 10)))


def test_halo_wider_than_neighbour_block_comes_from_far_ranks() -> None:
    # 4 model columns of width 2..3 and a halo of 5: server 0's halo reaches two ranks further
    plan = plan_routes(
        10, 4, model_decomposition(10, 4, 4, 1), server_blocks(10, 4, 2), 5, "closed"
    )
    assert plan.server_boxes[0] == Box(0, 5, 0, 4)
    assert plan.server_recv_peers(0) == (0, 1, 2, 3)
    round_trip(plan, np.random.default_rng(0).standard_normal((2, 4, 10)))


def test_periodic_wrap_segments() -> None:
    # one model rank, one server: the haloed block has 9 pieces (corners, edges, centre)
    plan = plan_routes(7, 7, [Box(0, 7, 0, 7)], [Box(0, 7, 0, 7)], 2, "periodic")
    assert list(plan.sends) == [(0, 0)]
    segs = plan.sends[(0, 0)]
    assert len(segs) == 9
    assert sum(seg.size for seg in segs) == 11 * 11
    # the first piece is the south-west corner, taken from the north-east of the model box
    assert segs[0] == Segment(src=Box(5, 7, 5, 7), dst=Box(0, 2, 0, 2))
    closed = plan_routes(7, 7, [Box(0, 7, 0, 7)], [Box(0, 7, 0, 7)], 2, "closed")
    assert closed.sends[(0, 0)] == (Segment(src=Box(0, 7, 0, 7), dst=Box(2, 9, 2, 9)),)
    px = plan_routes(7, 7, [Box(0, 7, 0, 7)], [Box(0, 7, 0, 7)], 2, "periodic_x")
    assert len(px.sends[(0, 0)]) == 3


def test_plan_is_deterministic_and_sorted() -> None:
    args = (13, 10, model_decomposition(13, 10, 3, 2), server_blocks(13, 10, 4), 3, "periodic")
    a, b = plan_routes(*args), plan_routes(*args)
    assert a == b
    assert list(a.sends) == sorted(a.sends)
    assert list(a.returns) == sorted(a.returns)
    for segments in a.sends.values():
        keys = [(seg.dst.j0, seg.dst.i0) for seg in segments]
        assert keys == sorted(keys)
    for r in range(a.n_model):
        assert a.model_send_peers(r) == tuple(sorted(s for (rr, s) in a.sends if rr == r))
        assert a.model_recv_peers(r) == tuple(sorted(s for (s, rr) in a.returns if rr == r))
    for s in range(a.n_server):
        assert a.server_recv_peers(s) == tuple(sorted(r for (r, ss) in a.sends if ss == s))
        assert a.server_send_peers(s) == tuple(sorted(r for (ss, r) in a.returns if ss == s))
    assert a.send_cells(0, 3) == 0 or (0, 3) in a.sends


def test_halo_only_pairs_send_but_get_nothing_back() -> None:
    plan = plan_routes(8, 4, model_decomposition(8, 4, 2, 1), server_blocks(8, 4, 2), 1, "closed")
    assert set(plan.sends) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert set(plan.returns) == {(0, 0), (1, 1)}
    assert plan.send_cells(1, 0) == 4  # one column of the neighbour
    assert plan.return_cells(0, 1) == 0


# -------------------------------------------------------------------------------------------
# Box and Segment
# -------------------------------------------------------------------------------------------


def test_box_basics() -> None:
    b = Box(2, 5, 1, 3)
    assert (b.nx, b.ny, b.size, b.shape) == (3, 2, 6, (2, 3))
    assert b.slices() == (slice(1, 3), slice(2, 5))
    a = np.arange(4 * 6 * 8).reshape(4, 6, 8)
    assert a[(slice(None), *b.slices())].shape == (4, 2, 3)
    assert b.shift(-2, -1) == Box(0, 3, 0, 2)
    assert b.grow(1) == Box(1, 6, 0, 4)
    assert b.contains(2, 1) and b.contains(4, 2)
    assert not b.contains(5, 1) and not b.contains(2, 3) and not b.contains(1, 1)
    assert b.intersect(Box(4, 9, 0, 2)) == Box(4, 5, 1, 2)
    assert b.intersect(Box(5, 9, 0, 9)) is None  # touching edges share no cell
    assert Box(0, 10, 0, 10).contains_box(b) and not b.contains_box(Box(0, 10, 0, 10))
    assert Box(3, 3, 0, 0).size == 0
    with pytest.raises(ValueError, match=r"inverted"):
        Box(3, 2, 0, 1)
    with pytest.raises(TypeError, match=r"Box.i1 must be an integer"):
        Box(0, 2.5, 0, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        b.grow(-1)
    assert Box(np.int64(1), np.int32(2), 0, 1).i0 == 1  # numpy integers are accepted


def test_segment_shape_and_side() -> None:
    seg = Segment(Box(0, 2, 0, 3), Box(5, 7, 1, 4))
    assert seg.size == 6 and seg.box("src") == seg.src and seg.box("dst") == seg.dst
    with pytest.raises(ValueError, match="differ in shape"):
        Segment(Box(0, 2, 0, 3), Box(0, 3, 0, 2))
    with pytest.raises(ValueError, match="side must be"):
        seg.box("both")  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------
# Splits
# -------------------------------------------------------------------------------------------


def test_split_1d_properties() -> None:
    for n in range(1, 80):
        for parts in range(1, n + 1):
            bounds = split_1d(n, parts)
            assert len(bounds) == parts
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
            assert sizes == sorted(sizes, reverse=True)  # larger first


def test_split_1d_refuses() -> None:
    with pytest.raises(ValueError, match=r"cannot split 3 cells into 4 parts"):
        split_1d(3, 4)
    with pytest.raises(ValueError, match=r"parts must be at least 1, got 0"):
        split_1d(5, 0)
    with pytest.raises(ValueError, match=r"n must be at least 1, got 0"):
        split_1d(0, 1)


def aspect(nx: int, ny: int, pi: int, pj: int) -> Fraction:
    w, h = nx * pj, ny * pi
    return Fraction(max(w, h), min(w, h))


def test_choose_process_grid_is_squarest() -> None:
    for nx, ny, m in itertools.product([1, 3, 7, 10, 13, 64, 100], [1, 5, 7, 64, 30], range(1, 25)):
        feasible = [(pi, m // pi) for pi in range(1, m + 1) if m % pi == 0]
        feasible = [(pi, pj) for pi, pj in feasible if pi <= nx and pj <= ny]
        if not feasible:
            with pytest.raises(ValueError, match=rf"m={m}"):
                choose_process_grid(nx, ny, m)
            continue
        pi, pj = choose_process_grid(nx, ny, m)
        assert pi * pj == m and pi <= nx and pj <= ny
        best = min(aspect(nx, ny, a, b) for a, b in feasible)
        assert aspect(nx, ny, pi, pj) == best
        ties = [(a, b) for a, b in feasible if aspect(nx, ny, a, b) == best]
        if nx >= ny:
            assert pi == max(a for a, _ in ties)
        else:
            assert pj == max(b for _, b in ties)


def test_choose_process_grid_examples() -> None:
    assert choose_process_grid(64, 64, 4) == (2, 2)
    assert choose_process_grid(64, 64, 2) == (2, 1)  # square grid: tie goes to x
    assert choose_process_grid(10, 64, 2) == (1, 2)
    assert choose_process_grid(100, 10, 10) == (10, 1)
    assert choose_process_grid(7, 13, 5) == (1, 5)
    assert choose_process_grid(60, 30, 8) == (4, 2)


def test_server_blocks_tile_in_rank_order() -> None:
    for nx, ny, m in itertools.product(GRIDS, GRIDS, range(1, 13)):
        if m == 11 and max(nx, ny) < 11:
            continue  # a prime above both sides is refused (tested below)
        blocks = server_blocks(nx, ny, m)
        assert len(blocks) == m
        check_tiling(nx, ny, blocks)
        pi, pj = choose_process_grid(nx, ny, m)
        # i fastest
        assert [b.i0 for b in blocks[:pi]] == sorted(b.i0 for b in blocks[:pi])
        assert all(b.j0 == 0 for b in blocks[:pi])
        nxs = {b.nx for b in blocks}
        nys = {b.ny for b in blocks}
        assert max(nxs) - min(nxs) <= 1 and max(nys) - min(nys) <= 1


def test_server_blocks_refuse_bad_m() -> None:
    with pytest.raises(ValueError, match=r"m \(number of server ranks\) must be at least 1, got 0"):
        server_blocks(10, 10, 0)
    with pytest.raises(
        ValueError, match=r"m \(number of server ranks\) must be at least 1, got -2"
    ):
        server_blocks(10, 10, -2)
    with pytest.raises(ValueError, match=r"m=26.*nx=5.*ny=5"):
        server_blocks(5, 5, 26)
    with pytest.raises(ValueError, match=r"m=7"):  # prime larger than both sides
        server_blocks(5, 6, 7)


# -------------------------------------------------------------------------------------------
# Tiling and argument checks
# -------------------------------------------------------------------------------------------


def test_tiling_overlap_names_ranks() -> None:
    boxes = [Box(0, 5, 0, 10), Box(5, 10, 0, 5), Box(4, 10, 5, 10)]
    with pytest.raises(
        ValueError, match=r"model boxes overlap: ranks 0 .* and 2 .* cell \(i=4, j=5\)"
    ):
        plan_routes(10, 10, boxes, server_blocks(10, 10, 1), 1, "closed")


def test_tiling_gap_counts_cells() -> None:
    boxes = [Box(0, 5, 0, 10), Box(5, 10, 0, 5), Box(6, 10, 5, 10)]
    with pytest.raises(
        ValueError, match=r"model boxes do not cover .*: 5 cell\(s\) uncovered, e\.g\. \(i=5, j=5\)"
    ):
        plan_routes(10, 10, boxes, server_blocks(10, 10, 1), 1, "closed")
    with pytest.raises(ValueError, match=r"server boxes do not cover .*: 50 cell\(s\)"):
        plan_routes(10, 10, server_blocks(10, 10, 2), [Box(0, 10, 0, 5)], 1, "closed")


def test_tiling_outside_and_bad_entries() -> None:
    with pytest.raises(ValueError, match=r"rank 1 has Box\(.*\), outside the 10 x 10 grid"):
        check_tiling(10, 10, [Box(0, 5, 0, 10), Box(5, 11, 0, 10)], "model boxes")
    with pytest.raises(ValueError, match="no boxes"):
        check_tiling(10, 10, [])
    with pytest.raises(TypeError, match="not a Box"):
        check_tiling(10, 10, [(0, 10, 0, 10)])  # type: ignore[list-item]
    # empty boxes are allowed and exchange nothing
    boxes = [Box(0, 10, 0, 10), Box(3, 3, 4, 4)]
    plan = plan_routes(10, 10, boxes, server_blocks(10, 10, 2), 2, "periodic")
    assert plan.model_send_peers(1) == () and plan.model_recv_peers(1) == ()


def test_halo_and_boundary_checks() -> None:
    models, servers = model_decomposition(7, 10, 2, 2), server_blocks(7, 10, 2)
    with pytest.raises(ValueError, match=r"halo=7 is not smaller than nx=7"):
        plan_routes(7, 10, models, servers, 7, "periodic")
    with pytest.raises(ValueError, match=r"halo=10 is not smaller than ny=10"):
        plan_routes(7, 10, models, servers, 10, "periodic_y")
    with pytest.raises(ValueError, match=r"halo=8 is not smaller than nx=7"):
        plan_routes(7, 10, models, servers, 8, "periodic_x")
    plan_routes(7, 10, models, servers, 9, "periodic_y")  # only y wraps: 9 < 10 is fine
    plan = plan_routes(7, 10, models, servers, 12, "closed")  # closed: any halo
    round_trip(plan, np.random.default_rng(1).standard_normal((2, 10, 7)))
    with pytest.raises(ValueError, match=r"halo must be >= 0, got -1"):
        plan_routes(7, 10, models, servers, -1, "closed")
    with pytest.raises(ValueError, match=r"boundary must be one of .*'cyclic'"):
        plan_routes(7, 10, models, servers, 1, "cyclic")
    with pytest.raises(ValueError, match=r"halo=7 is not smaller than nx=7"):
        assemble_global_reference(np.zeros((1, 10, 7)), Box(0, 7, 0, 10), 7, "periodic")
    assert periodicity("periodic_x") == (True, False)


def test_pack_unpack_checks_and_preallocated_buffer() -> None:
    a = np.arange(2 * 5 * 6, dtype=np.float64).reshape(2, 5, 6)
    segs = [Segment(Box(0, 2, 0, 1), Box(0, 2, 0, 1)), Segment(Box(4, 6, 3, 5), Box(2, 4, 0, 2))]
    buf = pack(a, segs)
    # levels first within each segment, segments concatenated
    expected = np.concatenate([a[:, 0:1, 0:2].ravel(), a[:, 3:5, 4:6].ravel()])
    np.testing.assert_array_equal(buf, expected)
    out = np.empty_like(buf)
    assert pack(a, segs, out=out) is out
    np.testing.assert_array_equal(out, expected)
    target = np.zeros((2, 2, 4))
    unpack(buf, segs, target)
    np.testing.assert_array_equal(target[:, 0:1, 0:2], a[:, 0:1, 0:2])
    np.testing.assert_array_equal(target[:, 0:2, 2:4], a[:, 3:5, 4:6])
    back = np.zeros_like(a)
    unpack(pack(target, segs, side="dst"), segs, back, side="src")
    np.testing.assert_array_equal(back[:, 3:5, 4:6], a[:, 3:5, 4:6])
    # a Fortran-ordered (nx, ny, nz) array seen as C-ordered (nz, ny, nx) works without a copy
    fortran = np.asfortranarray(np.random.default_rng(0).standard_normal((6, 5, 2)))
    np.testing.assert_array_equal(
        pack(fortran.T, segs), pack(np.ascontiguousarray(fortran.T), segs)
    )

    with pytest.raises(ValueError, match=re.escape("out must be 1-D with 12 elements")):
        pack(a, segs, out=np.empty(15))
    with pytest.raises(ValueError, match="dtype float64"):
        pack(a, segs, out=np.empty(12, dtype=np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        pack(a, segs, out=np.empty(24)[::2])
    with pytest.raises(ValueError, match="must be 3-D"):
        pack(a[0], segs)
    with pytest.raises(ValueError, match="does not fit"):
        pack(a[:, :2, :], segs)
    with pytest.raises(ValueError, match="buffer must be 1-D with 12 elements"):
        unpack(buf[:-1], segs, target)
    with pytest.raises(ValueError, match="does not fit"):
        unpack(buf, segs, np.zeros((2, 1, 4)))
    with pytest.raises(ValueError, match="side must be"):
        pack(a, segs, side="middle")  # type: ignore[arg-type]


def test_assemble_global_reference_by_hand() -> None:
    g = np.arange(1, 1 + 4 * 5, dtype=np.int64).reshape(1, 4, 5)
    closed = assemble_global_reference(g, Box(0, 2, 0, 2), 1, "closed")
    assert closed.shape == (1, 4, 4)
    np.testing.assert_array_equal(closed[0, 0], 0)
    np.testing.assert_array_equal(closed[0, :, 0], 0)
    np.testing.assert_array_equal(closed[0, 1:, 1:], g[0, 0:3, 0:3])
    wrapped = assemble_global_reference(g, Box(0, 2, 0, 2), 1, "periodic")
    assert wrapped[0, 0, 0] == g[0, 3, 4]  # south-west corner wraps to the north-east
    np.testing.assert_array_equal(wrapped[0, 1:, 0], g[0, 0:3, 4])
    px = assemble_global_reference(g, Box(0, 2, 0, 2), 1, "periodic_x")
    np.testing.assert_array_equal(px[0, 0], 0)
    np.testing.assert_array_equal(px[0, 1:, 0], g[0, 0:3, 4])
    with pytest.raises(ValueError, match="not inside"):
        assemble_global_reference(g, Box(0, 6, 0, 2), 1, "closed")

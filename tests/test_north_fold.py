"""North-fold halo fill of the plan against a NumPy reference of NEMO's ``lbc_nfd`` rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from bridge.domain.plan import (
    BOUNDARIES,
    FOLDS,
    Box,
    apply_transforms,
    assemble_global_reference,
    fill_fold,
    fold_mirror,
    pack,
    plan_routes,
    server_blocks,
    split_1d,
    unpack,
)


def nemo_fold_halo(glob: np.ndarray, pivot: str, point: str, halo: int, sign: float) -> np.ndarray:
    """The global field with its halo filled as NEMO's lbc_lnk fills it (reference).

    Written in NEMO's own indexing (nn_hls = 1 column formulas: global column ``ji`` 1-based
    with one cyclic column on each side, ``jpiglo = nx + 2``; ``jpj`` the first fold row):
    T pivot: T, V columns ``jpiglo - ji + 2``, U, F ``jpiglo - ji + 1``; rows: T, U ``jpj - 2``,
    V, F ``jpj - 3``, further fold rows one further down. F pivot: T, V ``jpiglo - ji + 1``,
    U, F ``jpiglo - ji``; rows T, U ``jpj - 1``, V, F ``jpj - 2``. Columns of the halo wrap.
    Returns the ``(nz, ny + 2 halo, nx + 2 halo)`` padded array, the south halo at zero.
    """
    nz, ny, nx = glob.shape
    jpiglo = nx + 2
    col_off = {("T", "T"): 2, ("T", "V"): 2, ("T", "U"): 1, ("T", "F"): 1}
    col_off.update({("F", "T"): 1, ("F", "V"): 1, ("F", "U"): 0, ("F", "F"): 0})
    row_back = {("T", "T"): 2, ("T", "U"): 2, ("T", "V"): 3, ("T", "F"): 3}
    row_back.update({("F", "T"): 1, ("F", "U"): 1, ("F", "V"): 2, ("F", "F"): 2})
    out = np.zeros((nz, ny + 2 * halo, nx + 2 * halo))
    for jp in range(ny + halo):  # 0-based rows of the grid and of the north halo
        for xp in range(-halo, nx + halo):
            x = xp % nx
            if jp < ny:
                value = glob[:, jp, x]
            else:
                jpj = ny  # 0-based first fold row
                k = jp - jpj
                ji = x + 2
                src_ji = jpiglo - ji + col_off[(pivot, point)]
                src_x = (src_ji - 2) % nx
                src_j = jpj - row_back[(pivot, point)] - k
                value = sign * glob[:, src_j, src_x]
            out[:, jp + halo, xp + halo] = value
    return out


def decompositions(nx: int, ny: int) -> list[list[Box]]:
    out = []
    for pi, pj in ((1, 1), (2, 1), (1, 2), (2, 2), (3, 2), (4, 1)):
        xs, ys = split_1d(nx, pi), split_1d(ny, pj)
        out.append([Box(i0, i1, j0, j1) for (j0, j1) in ys for (i0, i1) in xs])
    # an uneven split
    out.append([Box(0, 3, 0, ny), Box(3, nx, 0, 4), Box(3, nx, 4, ny)])
    return out


def routed_block(plan, s: int, glob: np.ndarray, sign: float, datatype_like: bool) -> np.ndarray:
    """Server ``s``'s haloed block filled through the plan's segments, as the transport does."""
    nz = glob.shape[0]
    block = np.zeros((nz, *plan.haloed_shape(s)))
    for r in plan.server_recv_peers(s):
        mbox = plan.model_boxes[r]
        local = np.ascontiguousarray(glob[(slice(None), *mbox.slices())])
        segments = plan.sends[(r, s)]
        buf = pack(local, segments)
        if datatype_like:  # MPI places the cells plainly; the transforms follow
            offset = 0
            for seg in segments:
                b = seg.dst
                count = nz * b.size
                block[:, b.j0 : b.j1, b.i0 : b.i1] = buf[offset : offset + count].reshape(
                    nz, b.ny, b.nx
                )
                offset += count
            apply_transforms(block, segments, sign)
        else:
            unpack(buf, segments, block, sign=sign)
    return block


@pytest.mark.parametrize("boundary", FOLDS)
@pytest.mark.parametrize("point", ["T", "U", "V", "F"])
def test_fold_fill_equals_nemo_rule(boundary: str, point: str) -> None:
    nx, ny, nz = 8, 9, 2
    rng = np.random.default_rng(7)
    glob = rng.standard_normal((nz, ny, nx))
    pivot = "T" if boundary == "north_fold_t" else "F"
    checked = 0
    for halo, sign in itertools.product((1, 2, 3), (1.0, -1.0)):
        ref = nemo_fold_halo(glob, pivot, point, halo, sign)
        for model_boxes in decompositions(nx, ny):
            for m in (1, 2, 3, 4):
                blocks = server_blocks(nx, ny, m)
                plan = plan_routes(nx, ny, model_boxes, blocks, halo, boundary, point)
                for s, sbox in enumerate(blocks):
                    want = ref[:, sbox.j0 : sbox.j1 + 2 * halo, sbox.i0 : sbox.i1 + 2 * halo]
                    direct = assemble_global_reference(glob, sbox, halo, boundary, point, sign)
                    np.testing.assert_array_equal(direct, want)
                    for datatype_like in (False, True):
                        got = routed_block(plan, s, glob, sign, datatype_like)
                        np.testing.assert_array_equal(
                            got, want, f"{boundary} {point} halo={halo} sign={sign} m={m} s={s}"
                        )
                    checked += 1
    assert checked > 100


def test_fold_sign_flips_only_across_the_fold() -> None:
    nx, ny = 6, 7
    glob = np.arange(1.0, 1.0 + nx * ny).reshape(1, ny, nx)
    box = Box(0, nx, 0, ny)
    plus = assemble_global_reference(glob, box, 2, "north_fold_t", "U", 1.0)
    minus = assemble_global_reference(glob, box, 2, "north_fold_t", "U", -1.0)
    np.testing.assert_array_equal(minus[:, : 2 + ny], plus[:, : 2 + ny])
    np.testing.assert_array_equal(minus[:, 2 + ny :], -plus[:, 2 + ny :])
    assert (plus[:, 2 + ny :] > 0).all()
    # first fold row of U, T pivot: column i from (-i - 1) mod nx of row ny - 2
    ci, cj = fold_mirror("north_fold_t", "U", nx, ny)
    assert (ci, cj) == (-1, 2 * (ny - 1))
    assert plus[0, 2 + ny, 2 + 0] == glob[0, ny - 2, nx - 1]


def test_fold_segments_are_reversed_and_signed_only_at_the_north() -> None:
    nx, ny = 10, 8
    models = [Box(0, 5, 0, 4), Box(5, 10, 0, 4), Box(0, 5, 4, 8), Box(5, 10, 4, 8)]
    blocks = server_blocks(nx, ny, 2)
    plan = plan_routes(nx, ny, models, blocks, 2, "north_fold_f", "V")
    folded = [seg for segs in plan.sends.values() for seg in segs if not seg.plain]
    assert folded and all(seg.rev_i and seg.rev_j and seg.signed for seg in folded)
    for (_, s), segs in plan.sends.items():
        for seg in segs:
            assert (not seg.plain) == (seg.dst.j1 > 2 + plan.server_boxes[s].ny)


@pytest.mark.parametrize("boundary", [b for b in BOUNDARIES if b not in FOLDS])
def test_other_boundaries_keep_plain_segments(boundary: str) -> None:
    nx, ny = 9, 7
    models = [Box(0, 4, 0, 7), Box(4, 9, 0, 7)]
    plan = plan_routes(nx, ny, models, server_blocks(nx, ny, 3), 2, boundary)
    assert all(seg.plain for segs in plan.sends.values() for seg in segs)
    for point in ("U", "F"):  # the point does not change the routes without a fold
        assert plan_routes(nx, ny, models, server_blocks(nx, ny, 3), 2, boundary, point) == plan


def test_fold_halo_must_leave_mirror_rows_in_the_grid() -> None:
    with pytest.raises(ValueError, match="ny - 1"):
        plan_routes(6, 4, [Box(0, 6, 0, 4)], [Box(0, 6, 0, 4)], 3, "north_fold_t")
    with pytest.raises(ValueError, match="point must be one of"):
        plan_routes(6, 4, [Box(0, 6, 0, 4)], [Box(0, 6, 0, 4)], 1, "north_fold_t", "W")


def test_config_takes_a_fold_and_its_vector_fields(tmp_path) -> None:
    from bridge.config.coupling import load_config

    path = tmp_path / "coupling.toml"
    path.write_text(
        '[model]\nexecutable = "toy_nemo"\nboundary = "north_fold_f"\nvectors = ["u", "v"]\n'
    )
    config = load_config(path)
    assert config.model.boundary == "north_fold_f"
    assert config.model.vectors == ("u", "v")


def test_server_plan_under_a_fold_serves_every_point() -> None:
    from bridge.protocol.handshake import FieldDecl
    from bridge.server.setup import Setup

    def setup(points: list[str]) -> Setup:
        fields = tuple(FieldDecl(f"f{k}", 2, "send", 1, "float64", p) for k, p in enumerate(points))
        return Setup(
            nx=8, ny=6, model_boxes=(Box(0, 4, 0, 6), Box(4, 8, 0, 6)), fields=fields,
            active=(1,) * len(fields), halo=2, boundary="north_fold_t", every=1, lag=0,
            mask=np.ones((6, 8)),
        )  # fmt: skip

    blocks = server_blocks(8, 6, 2)
    models = [Box(0, 4, 0, 6), Box(4, 8, 0, 6)]
    plan = setup(["T", "U", "V"]).plan(2)
    assert plan == plan_routes(8, 6, models, blocks, 2, "north_fold_t", None)
    assert plan == setup(["F"]).plan(2)
    staged = [seg for segs in plan.sends.values() for seg in segs if seg.staged]
    assert staged and plan.staging_shape(0) == (3, 9)  # 2 rows beyond the fold + 1, 4+4+1


def staged_block(plan, s: int, glob: np.ndarray, point: str, sign: float) -> np.ndarray:
    """Server ``s``'s block from point-independent routes: staged fold, then :func:`fill_fold`."""
    nz = glob.shape[0]
    block = np.zeros((nz, *plan.haloed_shape(s)))
    staging = np.zeros((nz, *plan.staging_shape(s)))
    for r in plan.server_recv_peers(s):
        mbox = plan.model_boxes[r]
        local = np.ascontiguousarray(glob[(slice(None), *mbox.slices())])
        segments = plan.sends[(r, s)]
        buf = pack(local, segments)
        offset = 0
        for seg in segments:  # cells placed plainly, as MPI datatypes do
            b = seg.dst
            count = nz * b.size
            target = staging if seg.staged else block
            target[:, b.j0 : b.j1, b.i0 : b.i1] = buf[offset : offset + count].reshape(
                nz, b.ny, b.nx
            )
            offset += count
        apply_transforms(staging, [seg for seg in segments if seg.staged])
    return fill_fold(block, staging, point, sign)


@pytest.mark.parametrize("boundary", FOLDS)
def test_one_set_of_routes_serves_every_point(boundary: str) -> None:
    """point=None: one plan, the fold staged, each field's halo filled by its own point."""
    nx, ny, nz = 8, 9, 2
    glob = np.random.default_rng(3).standard_normal((nz, ny, nx))
    checked = 0
    for halo in (1, 2, 3):
        for model_boxes in decompositions(nx, ny):
            for m in (1, 2, 3, 4):
                blocks = server_blocks(nx, ny, m)
                plan = plan_routes(nx, ny, model_boxes, blocks, halo, boundary, None)
                for s, sbox in enumerate(blocks):
                    for point, sign in (("T", 1.0), ("U", -1.0), ("V", -1.0), ("F", 1.0)):
                        want = assemble_global_reference(glob, sbox, halo, boundary, point, sign)
                        got = staged_block(plan, s, glob, point, sign)
                        np.testing.assert_array_equal(got, want, f"{point} m={m} s={s}")
                        checked += 1
    assert checked > 100

"""Seeded fuzzing of the NIfTI inputs of ``rootlets -i`` and ``rootlets levels``, in-process through the CLI entry point.

Every generated file (random dtype, shape, affine, voxel values, truncation, garbage) must either succeed with the
input's grid kept, or fail with one line and exit 1 having written nothing; never a traceback or another exit code.
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rootlets_task.cli.rootlets import main

CASES = 220
DTYPES = ("uint8", "int8", "int16", "uint16", "int32", "int64", "float32", "float64", "complex64", "rgb")
RGB = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


def _affine(rng: np.random.Generator) -> np.ndarray:
    kind = rng.choice(["scaled", "rotated", "zero", "singular", "nan", "inf", "tiny", "flipped"],
                      p=[0.3, 0.25, 0.06, 0.06, 0.05, 0.05, 0.08, 0.15])
    zooms = rng.uniform(0.3, 4.0, 3)
    affine = np.diag([*zooms, 1.0])
    if kind == "rotated":
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        affine[:3, :3] = q @ np.diag(zooms)
    elif kind == "zero":
        affine[:3, :3] = 0
    elif kind == "singular":
        affine[int(rng.integers(3)), :3] = 0
    elif kind in ("nan", "inf"):
        affine[int(rng.integers(3)), int(rng.integers(4))] = np.nan if kind == "nan" else np.inf
    elif kind == "tiny":
        affine[:3, :3] *= 1e-9
    elif kind == "flipped":
        affine[:3, :3] = affine[:3, :3][:, rng.permutation(3)] * rng.choice([-1, 1], 3)
    affine[:3, 3] = rng.uniform(-100, 100, 3)
    return affine


def _shape(rng: np.random.Generator) -> tuple[int, ...]:
    ndim = int(rng.choice([2, 3, 3, 3, 3, 4, 5]))
    shape = [int(rng.integers(1, 24)) for _ in range(ndim)]
    if rng.random() < 0.05:
        shape[int(rng.integers(ndim))] = 0
    if ndim > 3 and rng.random() < 0.6:
        shape[3:] = [1] * (ndim - 3)  # (x, y, z, 1): a 3D image in disguise
    return tuple(shape)


def _data(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if dtype == "rgb":
        out = np.zeros(shape, RGB)
        out["R"] = rng.integers(0, 255, shape)
        return out
    values = rng.normal(300, 200, shape)
    if rng.random() < 0.1 and dtype.startswith("float") and values.size:
        values.flat[int(rng.integers(values.size))] = rng.choice([np.nan, np.inf, -np.inf])
    if dtype == "complex64":
        return (values + 1j * values).astype(np.complex64)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    return np.clip(values, info.min, info.max).astype(dtype) if info else values.astype(dtype)


def _header_bytes(img: nib.Nifti1Image, affine: np.ndarray, rng: np.random.Generator) -> bytes:
    """The image as a single .nii byte string, its sform set to ``affine`` as any writer may do (nibabel refuses to
    write singular or non-finite affines itself), sometimes with a declared shape that the data do not have."""
    header = img.header.copy()
    header.set_data_dtype(img.get_data_dtype())
    header.set_data_shape(img.shape)
    for row, name in enumerate(("srow_x", "srow_y", "srow_z")):
        header[name] = affine[row]
    header["sform_code"], header["qform_code"] = 1, 0
    with np.errstate(invalid="ignore"):
        header["pixdim"][1:4] = np.linalg.norm(np.nan_to_num(affine[:3, :3]), axis=0)
    if rng.random() < 0.05:
        header["dim"][1:4] = [4000, 4000, 4000]
    header["vox_offset"] = 352
    data = np.asanyarray(img.dataobj)
    return header.binaryblock + b"\0" * 4 + np.ascontiguousarray(data.transpose()).tobytes()


def make_case(rng: np.random.Generator, folder: Path, i: int) -> Path:
    dtype = str(rng.choice(DTYPES, p=[0.14, 0.05, 0.2, 0.05, 0.05, 0.04, 0.25, 0.1, 0.06, 0.06]))
    shape = _shape(rng)
    data = _data(rng, shape, dtype)
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    img = nib.Nifti1Image(data, np.eye(4), header)
    raw = _header_bytes(img, _affine(rng), rng)
    if rng.random() < 0.12:
        raw = raw[: int(rng.integers(0, len(raw)))]
    if rng.random() < 0.03:
        raw = bytes(rng.integers(0, 256, int(rng.integers(1, 2000)), dtype=np.uint8))
    gz = rng.random() < 0.6
    path = folder / f"case{i:03d}.nii{'.gz' if gz else ''}"
    if gz:
        packed = gzip.compress(raw)
        if rng.random() < 0.08:
            packed = packed[: int(rng.integers(1, len(packed)))]
        path.write_bytes(packed)
    else:
        path.write_bytes(raw)
    return path


def _outcome(argv: list, out: Path, capsys) -> str:
    """Run the CLI; check the one-line/no-output rule on failure. Returns "ok" or "refused"."""
    before = sorted(out.rglob("*"))
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    if code == 0:
        return "ok"
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("rootlets: error: "), (argv, code, err)
    assert sorted(out.rglob("*")) == before, (argv, "wrote files although it failed")
    return "refused"


def _grid_kept(source: Path, output: Path) -> None:
    src, res = nib.load(source), nib.load(output)
    assert res.shape == src.shape[:3] and res.get_data_dtype() == np.uint8
    np.testing.assert_allclose(res.affine, src.affine, atol=1e-5)


@pytest.fixture
def fuzz_store(random_store, monkeypatch):
    monkeypatch.setenv("ROOTLETS_TASK_HOME", str(random_store))
    monkeypatch.setenv("ROOTLETS_TASK_BACKEND", "torch")  # the random model converts instantly either way; skip it
    return random_store


def test_fuzzed_images_succeed_with_their_grid_or_fail_in_one_line(fuzz_store, tmp_path, capsys):
    rng = np.random.default_rng(20261201)
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    counts = Counter()
    for i in range(CASES):
        path = make_case(rng, folder, i)
        result = _outcome(["-i", path, "-o", out / f"seg{i:03d}.nii.gz", "-v", "0"], out, capsys)
        counts[result] += 1
        if result == "ok":
            _grid_kept(path, out / f"seg{i:03d}.nii.gz")
    print(f"rootlets -i fuzz: {dict(counts)}")
    assert counts["ok"] >= 20 and counts["refused"] >= 60, counts  # both kinds of input really occur


def test_fuzzed_label_files_through_levels(fuzz_store, tmp_path, capsys):
    from rootlets_task.io.phantom import write_phantom

    ph = write_phantom(tmp_path / "ph", spacing=(2.0, 2.0, 2.0))
    rng = np.random.default_rng(7)
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    counts = Counter()
    kinds = {"-r": "rootlets", "-s": "cord", "-discs": "discs", "-pmj": "pmj"}
    for i in range(CASES):
        role = tuple(kinds)[i % 4]
        path = make_case(rng, folder, i) if i % 3 else mutate_labels(rng, ph[kinds[role]], folder / f"lab{i:03d}.nii.gz")
        files = {"-r": ph["rootlets"], "-s": ph["cord"], role: path}
        argv = ["levels", *[x for flag, file in files.items() for x in (flag, file)], "-o", out / f"c{i:03d}"]
        result = _outcome(argv, out, capsys)
        counts[result] += 1
        if result == "ok":
            _grid_kept(ph["rootlets"], next((out / f"c{i:03d}").glob("*_spinal_levels.nii.gz")))
    print(f"rootlets levels fuzz: {dict(counts)}")
    assert counts["ok"] >= 10 and counts["refused"] >= 100, counts


def mutate_labels(rng: np.random.Generator, source: Path, path: Path) -> Path:
    """A label file on the phantom's own grid, changed at random: dtype, stray or negative values, fractions, a moved
    voxel, a flipped axis, or nothing at all."""
    img = nib.load(source)
    data = np.asanyarray(img.dataobj).astype(np.float64)
    change = rng.choice(["none", "dtype", "stray", "negative", "fraction", "shift", "flip", "empty"])
    if change == "stray":
        data[tuple(rng.integers(0, n) for n in data.shape)] = rng.integers(1, 300)
    elif change == "negative":
        data.flat[int(rng.integers(data.size))] = -1
    elif change == "fraction":
        data[data > 0] += 0.5
    elif change == "shift":
        data = np.roll(data, int(rng.integers(-5, 6)), axis=int(rng.integers(3)))
    elif change == "flip":
        data = data[::-1]
    elif change == "empty":
        data[:] = 0
    dtype = str(rng.choice(["uint8", "int16", "float32", "float64"])) if change == "dtype" else "uint8"
    if dtype == "uint8" and (data.min() < 0 or data.max() > 255 or change == "fraction"):
        dtype = "float32"
    header = img.header.copy()
    header.set_data_dtype(dtype)
    nib.save(nib.Nifti1Image(data.astype(dtype), img.affine, header), path)
    return path


def test_the_generator_makes_readable_valid_cases(tmp_path):
    """The fuzzer is worth something only if its valid cases are real NIfTI files nibabel reads back."""
    rng = np.random.default_rng(1)
    readable = 0
    for i in range(40):
        path = make_case(rng, tmp_path, i)
        try:
            img = nib.load(path)
            np.asanyarray(img.dataobj)
            readable += 1
        except Exception:  # noqa: BLE001 - most cases are meant to be broken in some way
            pass
    assert readable >= 10


# ------------------------------------------------------------------------------------------------ JSON readers
JSON_CASES = 300


def _json_value(rng: np.random.Generator, depth: int):
    """A random JSON value: scalars of every type (NaN, huge numbers, text), lists and objects up to ``depth``."""
    kind = rng.choice(["int", "float", "text", "bool", "null", "list", "dict"] if depth > 0 else ["int", "float", "text"])
    if kind == "int":
        return int(rng.choice([0, -3, 1, 64, 4096, 10**12]))
    if kind == "float":
        return float(rng.choice([0.0, -1.5, 0.5, 1e308, float("nan"), float("inf")]))
    if kind == "text":
        return str(rng.choice(["", "abc", "64", "\x1b[2J", "passed", "../x"]))
    if kind == "bool":
        return bool(rng.integers(2))
    if kind == "null":
        return None
    items = [_json_value(rng, depth - 1) for _ in range(int(rng.integers(0, 4)))]
    if kind == "list":
        return items
    return {str(rng.choice(["tasks", "units", "name", "Levers", "passed", "patch_size", "spacing", "subject", "x"])): v
            for v in items}


def json_case(rng: np.random.Generator, path: Path) -> Path:
    """A JSON file as an attacker or a crash leaves it: random content, nested up to 100,000 levels, large,
    truncated, not UTF-8, or empty."""
    kind = rng.choice(["random", "deep", "large", "truncated", "binary", "empty"], p=[0.5, 0.15, 0.1, 0.1, 0.1, 0.05])
    if kind == "deep":
        n = int(rng.choice([70, 1000, 100_000]))
        text = rng.choice(["[", '{"a":']) * n
        path.write_text(text + ("]" if text[0] == "[" else "}") * n if rng.random() < 0.7 else text)
    elif kind == "large":
        path.write_text(json.dumps({"pad": "x" * int(rng.integers(1 << 20, 3 << 20))}))
    elif kind == "binary":
        path.write_bytes(bytes(rng.integers(0, 256, int(rng.integers(1, 2000)), dtype=np.uint8)))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        text = json.dumps(_json_value(rng, int(rng.integers(1, 6))))
        path.write_text(text[: int(rng.integers(0, len(text)))] if kind == "truncated" else text)
    return path


def test_fuzzed_json_through_every_reader(tmp_path, caplog):
    """Every reader of a JSON file the package did not write itself: a value or one RootletsError line, never a
    traceback (RecursionError, TypeError, KeyError, ZeroDivisionError, MemoryError ...)."""
    from rootlets_task.batch import slurm_array
    from rootlets_task.core.errors import RootletsError
    from rootlets_task.core.files import load_json, read_json
    from rootlets_task.models.plans import plans_problem
    from rootlets_task.pipeline.speedcheck import verify
    from rootlets_task.qc import report, sct_report

    rng = np.random.default_rng(23)
    qc = tmp_path / "qc"
    (qc / "js").mkdir(parents=True)
    (qc / "_json").mkdir()
    records = qc / report.REPORT / report.RECORDS
    records.mkdir(parents=True)
    counts = Counter()
    for i in range(JSON_CASES):
        path = json_case(rng, tmp_path / f"case{i:03d}.json")
        content = read_json(path, limit=2 << 20)
        try:
            assert load_json(path, "case", limit=2 << 20) == content or content != content  # NaN inside
            counts["parsed"] += 1
        except RootletsError as exc:
            assert content is None and "\n" not in str(exc) and str(path) in str(exc)
            counts["refused"] += 1
        for check in (plans_problem, slurm_array.plan_problem, report._record_problem):
            assert check(content) is None or isinstance(check(content), str)
        if isinstance(content, dict):
            try:
                verify(content, str(path))
            except RootletsError as exc:
                assert "\n" not in str(exc)
        shutil.copy(path, qc / "_json" / f"qc_{i:03d}.json")
        shutil.copy(path, records / f"r{i:03d}.json")
        (qc / "js" / "datasets.js").write_bytes(path.read_bytes())
    with caplog.at_level("WARNING"):
        sct_report.refresh_datasets(qc)
        report.rebuild_index(qc)
    print(f"JSON fuzz: {dict(counts)}")
    assert counts["parsed"] >= 100 and counts["refused"] >= 60, counts


def test_fuzzed_plans_values_are_refused_or_sane():
    """Random changes of a plans.json's values: what :func:`plans_problem` accepts has whole-number patch sizes and
    spacings in range, and a tile that fits in memory."""
    from rootlets_task.models.plans import MAX_PATCH_VOXELS, SPACING_MM, plans_problem

    rng = np.random.default_rng(5)
    base = {"transpose_forward": [0, 1, 2], "configurations": {"3d_fullres": {"patch_size": [64, 32, 32],
                                                                             "spacing": [1.0, 1.0, 1.0]}}}
    counts = Counter()
    for _ in range(500):
        plans = json.loads(json.dumps(base))
        config = plans["configurations"]["3d_fullres"]
        key = str(rng.choice(["patch_size", "spacing", "transpose_forward"]))
        target = plans if key == "transpose_forward" else config
        values = list(target[key])
        plausible = {"patch_size": int(rng.integers(1, 300)), "spacing": float(rng.uniform(0.005, 120)),
                     "transpose_forward": int(rng.integers(0, 3))}[key]
        values[int(rng.integers(len(values)))] = plausible if rng.random() < 0.6 else _json_value(rng, 1)
        if rng.random() < 0.2:
            values = values[: int(rng.integers(0, 4))] or _json_value(rng, 2)
        target[key] = values
        problem = plans_problem(plans)
        counts["refused" if problem else "accepted"] += 1
        if problem is None:
            patch, spacing = config["patch_size"], config["spacing"]
            assert all(isinstance(p, int) and 1 <= p <= 4096 for p in patch) and np.prod(patch) <= MAX_PATCH_VOXELS
            assert all(SPACING_MM[0] <= s <= SPACING_MM[1] for s in spacing) and len(spacing) == len(patch)
            assert sorted(plans["transpose_forward"]) == list(range(len(plans["transpose_forward"])))
    print(f"plans fuzz: {dict(counts)}")
    assert counts["accepted"] >= 50 and counts["refused"] >= 200, counts

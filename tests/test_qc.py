"""QC figures and reports, checked by what they show (colours where the rootlets are, orientation, scale),
in a real headless Chromium, and with several real processes writing into one QC folder at once."""

from __future__ import annotations

import html.parser
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from filelock import FileLock
from matplotlib.colors import to_rgb
from PIL import Image
from support.chromium import MISSING, Chromium, chromium_path
from support.required import needs

from rootlets_task.cli.rootlets import main
from rootlets_task.core.colours import level_colour
from rootlets_task.core.errors import RootletsError
from rootlets_task.core.names import level_name
from rootlets_task.io.phantom import SPINAL_LEVELS, make_phantom
from rootlets_task.levels.compute import compute_levels, levels_from_files
from rootlets_task.qc.report import LOCK, REPORT, qc_subject
from rootlets_task.qc.views import display_views

# Four orientations, one of them anisotropic (0.5 x 0.5 x 3 mm axial).
CASES = {"LPI": (1.0, 1.0, 1.0), "RPI": (0.5, 0.5, 3.0), "AIL": (0.8, 0.8, 0.8), "PSR": (1.0, 1.0, 1.0)}
ONE_SIDED = 5  # C5: patient-left rootlets removed -> must appear on the patient's right only
DORSAL_ONLY = 7  # C7: ventral (anterior) rootlets removed -> must appear posterior only


def _world(ph, mask: np.ndarray) -> np.ndarray:
    ijk = np.argwhere(mask)
    return ijk @ ph.affine[:3, :3].T + ph.affine[:3, 3]


def asymmetric_phantom(orient: str, spacing, seed: int = 0):
    """A phantom whose rootlets tell left from right and front from back (the real phantom is symmetric)."""
    ph = make_phantom(orient, spacing, seed=seed)
    for level, world_axis, keep_above in ((ONE_SIDED, 0, True), (DORSAL_ONLY, 1, False)):
        mask = ph.rootlets == level
        coords = _world(ph, mask)[:, world_axis]  # RAS+: x grows to the patient's right, y anteriorly
        middle = np.median(coords)
        drop = coords < middle if keep_above else coords > middle
        idx = tuple(np.argwhere(mask)[drop].T)
        ph.rootlets[idx] = 0
    return ph


def write_subject(qc_dir: Path, ph, subject: str, **kw) -> Path:
    result = compute_levels(ph.rootlets, ph.cord, ph.affine, ph.discs, ph.pmj)
    return qc_subject(qc_dir, ph.nifti("image"), ph.nifti("rootlets"), ph.nifti("cord"), ph.nifti("discs"),
                      result.levels, result.shift, subject=subject,
                      provenance={"release": "phantom", "cord": "phantom truth", "method": result.method}, **kw)


@pytest.fixture(scope="module")
def qc_folder(tmp_path_factory):
    """One QC folder with a subject per orientation (PSR carries a warning)."""
    qc_dir = tmp_path_factory.mktemp("qc")
    phantoms = {}
    for seed, (orient, spacing) in enumerate(CASES.items()):
        ph = asymmetric_phantom(orient, spacing, seed)
        write_subject(qc_dir, ph, f"sub-{orient}", warnings=["check C8: faint rootlets <b>&</b>"] if orient == "PSR" else ())
        phantoms[orient] = ph
    return qc_dir, phantoms


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _colour_mask(picture: np.ndarray, colour, alpha: float = 1.0) -> np.ndarray:
    rgb = np.array(to_rgb(colour)) * alpha + (1 - alpha)  # over white when not opaque
    return (np.abs(picture - np.round(rgb * 255)) <= 3).all(axis=-1)


def _record(qc_dir: Path, key: str) -> dict:
    return json.loads((qc_dir / REPORT / "_records" / f"{key}.json").read_text())


@pytest.mark.parametrize("orient", CASES)
def test_rootlets_figure_shows_levels_where_the_rootlets_are(qc_folder, orient):
    qc_dir, phantoms = qc_folder
    record = _record(qc_dir, f"sub-{orient}")
    picture = _png(qc_dir / REPORT / f"sub-{orient}" / "rootlets.png")
    truth = phantoms[orient].truth["spinal_levels"]
    for name, panel in record["figures"]["rootlets"]["panels"].items():
        x0, y0, x1, y1 = panel["box_px"]
        width_mm, height_mm = panel["extent_mm"]
        px_per_mm_x, px_per_mm_y = (x1 - x0) / width_mm, (y1 - y0) / height_mm
        assert px_per_mm_x == pytest.approx(px_per_mm_y, rel=0.03), f"{name}: pixels are not square in mm"
        crop = picture[y0:y1, x0:x1]
        centres = {}
        for level in SPINAL_LEVELS:
            hits = np.argwhere(_colour_mask(crop, level_colour(level_name(level, "spinal"))))
            assert len(hits) > 20, f"{name}: colour of {level_name(level, 'spinal')} missing"
            centres[level] = hits.mean(axis=0)
        rows = [centres[level][0] for level in SPINAL_LEVELS]
        assert np.all(np.diff(rows) > 0), f"{name}: levels not ordered rostral (top) to caudal: {rows}"
        # Distances on the picture are millimetres of the patient, whatever the voxel size.
        for level in SPINAL_LEVELS[1:]:
            seen = (centres[level][0] - centres[2][0]) / px_per_mm_y
            expected = truth[str(level)]["mid_mm"] - truth["2"]["mid_mm"]
            assert seen == pytest.approx(expected, abs=3.0), f"{name}: {level_name(level, 'spinal')} misplaced"
        if name == "coronal":  # neurological convention: the patient's right on the right
            one_sided = np.argwhere(_colour_mask(crop, level_colour(f"C{ONE_SIDED}")))[:, 1]
            both = np.argwhere(_colour_mask(crop, level_colour("C4")))[:, 1]
            middle = both.mean()
            assert (one_sided > middle).all(), "coronal view is flipped left-right"
            assert (both < middle).any() and (both > middle).any()
        else:  # anterior on the left
            dorsal = centres[DORSAL_ONLY][1]
            assert dorsal - centres[DORSAL_ONLY - 1][1] > 1.0 * px_per_mm_x, "sagittal view is flipped front-back"


def test_views_are_the_same_in_every_orientation():
    """Same seed and spacing, different voxel order -> the same picture, voxel for voxel."""
    views = []
    for orient in ("LPI", "PSR", "AIL"):
        ph = asymmetric_phantom(orient, (1.0, 1.0, 1.0), seed=3)
        views.append(display_views(ph.nifti("image"), ph.nifti("rootlets"), ph.nifti("cord"), ph.nifti("discs")))
    for other in views[1:]:
        for name in ("sagittal", "coronal"):
            assert other[name].rootlets.shape == views[0][name].rootlets.shape
            assert np.mean(other[name].rootlets == views[0][name].rootlets) > 0.995
            # same anatomy; the phantom's noise is drawn in voxel order, so it differs between orientations
            assert np.corrcoef(other[name].image.ravel(), views[0][name].image.ravel())[0, 1] > 0.95
            # within one voxel: the phantom rounds disc positions that fall halfway between voxels
            assert np.allclose(sorted(other[name].discs), sorted(views[0][name].discs), atol=1.0)


def test_levels_figure_places_bars_by_distance(qc_folder):
    qc_dir, phantoms = qc_folder
    picture = _png(qc_dir / REPORT / "sub-LPI" / "levels.png")
    truth = phantoms["LPI"].truth["spinal_levels"]
    rows, mids, cols = [], [], []
    for level in SPINAL_LEVELS:
        hits = np.argwhere(_colour_mask(picture, level_colour(level_name(level, "spinal")), alpha=0.9))
        assert len(hits) > 200, f"no bar for {level_name(level, 'spinal')}"
        rows.append(hits[:, 0].mean())
        cols.append(hits[:, 1].mean())
        mids.append(truth[str(level)]["mid_mm"])
    fit = np.polyfit(mids, rows, 1)
    residual = np.array(rows) - np.polyval(fit, mids)
    assert fit[0] > 0, "rostral levels must be at the top"
    assert np.abs(residual).max() < 0.02 * (max(rows) - min(rows)), "bars are not placed by distance along the cord"
    vertebral = np.argwhere(_colour_mask(picture, "#d9d9d9") | _colour_mask(picture, "#bdbdbd"))
    assert len(vertebral) > 1000 and vertebral[:, 1].mean() < min(cols), "vertebral column must be left of spinal"


def test_subject_page_and_record_report_the_levels(qc_folder):
    qc_dir, phantoms = qc_folder
    ph = phantoms["AIL"]
    result = compute_levels(ph.rootlets, ph.cord, ph.affine, ph.discs, ph.pmj)
    record = _record(qc_dir, "sub-AIL")
    assert record["spinal_levels"] == [level_name(v, "spinal") for v in SPINAL_LEVELS]
    shifted = result.shift[result.shift["pairing"] == "shifted"]
    assert [s["shift_mm"] for s in record["shifts"]] == pytest.approx(shifted["shift_mm"].tolist(), abs=0.01)
    page = (qc_dir / REPORT / "sub-AIL" / "index.html").read_text()
    for text in ("rootlets.png", "levels.png", "Provenance", "phantom truth", "gapfree", "../index.html"):
        assert text in page
    assert page.count("<tr>") >= len(result.levels) + len(result.shift)
    for page in (qc_dir / REPORT / "sub-PSR" / "index.html", qc_dir / REPORT / "index.html"):  # shown as text, never as markup
        assert "check C8: faint rootlets &lt;b&gt;&amp;&lt;/b&gt;" in page.read_text()
    umask = os.umask(0o022)
    os.umask(umask)
    report = qc_dir / REPORT
    for path in (report / "index.html", report / "sub-AIL" / "rootlets.png", report / "_records" / "sub-AIL.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, f"{path} not readable as the umask allows"


def test_missing_level_is_a_warning_on_page_and_index(tmp_path):
    ph = make_phantom("LPI", (2.0, 2.0, 2.0), seed=5)
    ph.rootlets[ph.rootlets == 4] = 0
    write_subject(tmp_path, ph, "sub-gap")
    record = _record(tmp_path, "sub-gap")
    assert "C4" not in record["spinal_levels"]
    assert any("C4" in w and "missing" in w for w in record["warnings"])
    assert "missing" in (tmp_path / REPORT / "index.html").read_text()


def test_bad_input_writes_nothing(tmp_path):
    ph = make_phantom("LPI", (2.0, 2.0, 2.0), seed=1)
    table = tmp_path / "levels.csv"
    pd.DataFrame({"kind": ["spinal"], "level": ["C2"]}).to_csv(table, index=False)
    qc_dir = tmp_path / "qc"
    with pytest.raises(RootletsError, match=r"levels table .*levels.csv: missing columns"):
        qc_subject(qc_dir, ph.nifti("image"), ph.nifti("rootlets"), levels=table)
    far_affine = ph.affine.copy()
    far_affine[:3, 3] += 500  # half a metre away
    far = nib.Nifti1Image(ph.rootlets, far_affine)
    with pytest.raises(RootletsError, match="does not overlap the image"):
        qc_subject(qc_dir, ph.nifti("image"), far)
    assert not qc_dir.exists()
    (tmp_path / "a_file").write_text("")
    with pytest.raises(RootletsError, match="QC folder .*a_file/qc: cannot be created"):
        qc_subject(tmp_path / "a_file" / "qc", ph.nifti("image"), ph.nifti("rootlets"))


def test_lock_held_too_long_is_a_clear_error(tmp_path, monkeypatch):
    import rootlets_task.qc.report as qc

    ph = make_phantom("LPI", (2.0, 2.0, 2.0), seed=1)
    monkeypatch.setattr(qc, "LOCK_TIMEOUT_S", 0.2)
    tmp_path.joinpath("qc", REPORT).mkdir(parents=True)
    with FileLock(tmp_path / "qc" / REPORT / LOCK), pytest.raises(RootletsError, match="another process held"):
        qc_subject(tmp_path / "qc", ph.nifti("image"), ph.nifti("rootlets"), subject="sub-late")
    assert (tmp_path / "qc" / REPORT / "_records" / "sub-late.json").is_file()  # kept for the next index rebuild
    qc.rebuild_index(tmp_path / "qc")
    assert "sub-late" in (tmp_path / "qc" / REPORT / "index.html").read_text()


def test_qc_command(tmp_path, capsys):
    from rootlets_task.io.phantom import write_phantom

    files = write_phantom(tmp_path / "in", "RPI", (2.0, 2.0, 2.0), seed=2)
    levels, _ = levels_from_files(files["rootlets"], files["cord"], files["discs"], files["pmj"], out_dir=tmp_path / "lv")
    sidecar = {"GeneratedBy": [{"Name": "rootlets_task: rootlets -i x", "Release": "phantom", "ModelURL": "file:///m.zip"}]}
    files["rootlets"].with_name("phantom_T2w_label-rootlets_dseg.json").write_text(json.dumps(sidecar))
    qc_dir = tmp_path / "qc"
    assert main(["qc", "-i", str(files["image"]), "-r", str(files["rootlets"]), "-s", str(files["cord"]),
                 "-discs", str(files["discs"]), "-levels", str(levels["json"]), "-qc", str(qc_dir),
                 "-qc-subject", "sub-cli"]) == 0
    assert (qc_dir / REPORT / "sub-cli" / "levels.png").is_file() and "sub-cli" in (qc_dir / REPORT / "index.html").read_text()
    record = _record(qc_dir, "sub-cli")
    assert record["provenance"]["release"] == "phantom", "the release is read from the rootlets' JSON sidecar"
    table = pd.read_csv(levels["csv"])
    assert record["spinal_levels"] == table[(table["kind"] == "spinal") & (table["status"] == "ok")]["level"].tolist()
    assert [s["spinal_level"] for s in record["shifts"]] == pd.read_csv(levels["shift"]).query(
        "pairing == 'shifted'")["spinal_level"].tolist(), "shift derived from the levels JSON"
    assert main(["qc", "-i", str(files["image"]), "-r", str(tmp_path / "nope.nii.gz"), "-qc", str(qc_dir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.nii.gz" in err[0]


class _Rows(html.parser.HTMLParser):
    """Subject rows of the index (strict enough to notice a truncated or interleaved file)."""

    def __init__(self):
        super().__init__()
        self.subjects, self.stack = [], []

    def handle_starttag(self, tag, attrs):
        if tag not in ("meta", "link", "img", "input", "br"):
            self.stack.append(tag)
        if tag == "tr" and dict(attrs).get("data-search") is not None:
            self.subjects.append(dict(attrs)["data-search"].split()[0])

    def handle_endtag(self, tag):
        if tag not in ("meta", "link", "img", "input", "br"):
            assert self.stack.pop() == tag


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from rootlets_task.io.phantom import make_phantom
    from rootlets_task.qc.report import qc_subject
    qc_dir, worker, go = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    ph = make_phantom("LPI", (2.0, 2.0, 2.0), seed=worker)
    (qc_dir.parent / f"ready-{worker}").touch()
    while not go.exists():
        time.sleep(0.01)
    for n in range(2):
        qc_subject(qc_dir, ph.nifti("image"), ph.nifti("rootlets"), ph.nifti("cord"), subject=f"sub-w{worker}n{n}")
""")


def test_concurrent_writers_lose_nothing(tmp_path):
    """Four processes, two subjects each, released at the same instant into one QC folder; the test holds the
    folder's lock first, so all of them contend for it at once (and the test fails if they do not use it)."""
    qc_dir, go = tmp_path / "qc", tmp_path / "go"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    procs = [subprocess.Popen([sys.executable, str(script), str(qc_dir), str(w), str(go)], env=env,
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    (qc_dir / REPORT).mkdir(parents=True)
    with FileLock(qc_dir / REPORT / LOCK):  # hold the folder's lock: every writer must queue behind it
        go.touch()
        while len(list(qc_dir.glob(f"{REPORT}/_records/*.json"))) < len(procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert not (qc_dir / REPORT / "index.html").exists(), "the index was written without taking the folder's lock"
        assert all(p.poll() is None for p in procs), "a writer finished without waiting for the lock"
    for p in procs:
        assert p.wait(timeout=180) == 0, p.stderr.read()
    expected = sorted(f"sub-w{w}n{n}" for w in range(4) for n in range(2))
    parser = _Rows()
    parser.feed((qc_dir / REPORT / "index.html").read_text())
    parser.close()
    assert sorted(parser.subjects) == [s.lower() for s in expected] and not parser.stack
    assert sorted(json.loads(p.read_text())["subject"] for p in (qc_dir / REPORT / "_records").glob("*.json")) == expected
    assert not [p for p in qc_dir.rglob("*") if ".tmp" in p.name], "temporary files left behind"


@needs("chromium", chromium_path(), MISSING)
def test_pages_in_headless_chromium(qc_folder, tmp_path):

    qc_dir, _ = qc_folder
    load_all = """Promise.all(Array.from(document.images).map(i => { i.loading = "eager";
        return i.decode().catch(() => null); })).then(() =>
        Array.from(document.images).map(i => [i.getAttribute("src"), i.naturalWidth]))"""
    with Chromium(tmp_path / "profile") as browser:
        browser.open((qc_dir / REPORT / "index.html").as_uri())
        images = browser.evaluate(load_all)
        assert len(images) == len(CASES) and all(width > 0 for _, width in images), images
        browser.screenshot(qc_dir / "screenshot_index.png")
        count = """(q, w) => { const box = document.getElementById("filter"); box.value = q;
            box.dispatchEvent(new Event("input")); const c = document.getElementById("only-warn"); c.checked = w;
            c.dispatchEvent(new Event("change"));
            return Array.from(document.querySelectorAll("#subjects tbody tr")).filter(r => !r.hidden).length; }"""
        assert browser.evaluate(f"({count})('', false)") == len(CASES)
        assert browser.evaluate(f"({count})('sub-psr', false)") == 1
        assert browser.evaluate(f"({count})('c8 faint', false)") == 1
        assert browser.evaluate(f"({count})('', true)") == 1
        assert browser.evaluate(f"({count})('no-such-subject', false)") == 0
        # review mode: the filtered subjects one by one, with the keyboard
        assert browser.evaluate(f"({count})('', false)") == len(CASES)
        viewer = """(key) => { if (key) document.dispatchEvent(new KeyboardEvent("keydown", {key: key}));
            else document.getElementById("review").click();
            const v = document.getElementById("viewer"), imgs = Array.from(v.querySelectorAll("img"));
            return Promise.all(imgs.map(i => i.decode().catch(() => null))).then(() => [v.hidden,
                document.getElementById("v-subject").textContent, imgs.map(i => i.naturalWidth)]); }"""
        subjects = sorted(f"sub-{orient}" for orient in CASES)
        hidden, subject, widths = browser.evaluate(f"({viewer})('')")
        assert not hidden and subject == subjects[0] and len(widths) == 2 and min(widths) > 0
        assert browser.evaluate(f"({viewer})('ArrowRight')")[1] == subjects[1]
        assert browser.evaluate(f"({viewer})('ArrowLeft')")[1] == subjects[0]
        assert browser.evaluate(f"({viewer})('ArrowLeft')")[1] == subjects[-1]  # wraps around
        browser.evaluate(f"({viewer})('f')")  # verdict "fail" for the subject shown (the last), kept across reloads
        assert browser.evaluate("document.getElementById('v-verdict').textContent") == "fail"
        browser.screenshot(qc_dir / "screenshot_review.png")
        assert browser.evaluate(f"({viewer})('Escape')")[0] is True
        browser.open((qc_dir / REPORT / "index.html").as_uri())
        assert browser.evaluate("rootletsQcVerdictsCsv()") == f'subject,verdict\n"{subjects[-1]}",fail\n'
        assert browser.evaluate("Array.from(document.querySelectorAll('#subjects tbody tr .verdict'))"
                                ".map(b => b.textContent)") == ["", "", "", "fail"]
        for orient in CASES:
            browser.open((qc_dir / REPORT / f"sub-{orient}" / "index.html").as_uri())
            images = browser.evaluate(load_all)
            assert [src for src, _ in images] == ["rootlets.png", "levels.png"]
            assert all(width > 0 for _, width in images), images
        browser.screenshot(qc_dir / "screenshot_subject.png")
        assert browser.errors == []
    shot = Image.open(qc_dir / "screenshot_subject.png")
    assert shot.width == 1280 and shot.height > 900
    print(f"screenshots: {qc_dir}/screenshot_index.png, {qc_dir}/screenshot_subject.png")


def test_labels_on_another_grid_and_empty_rootlets(tmp_path):
    """Rootlets on a coarser grid of the same space land where they belong; empty rootlets still give a page."""
    fine, coarse = make_phantom("LPI", (1.0, 1.0, 1.0), seed=4), make_phantom("AIL", (2.0, 2.0, 2.0), seed=4)
    page = qc_subject(tmp_path, fine.nifti("image"), coarse.nifti("rootlets"), fine.nifti("cord"), subject="sub-grid")
    record = _record(tmp_path, "sub-grid")
    assert any("rootlets came on another grid" in n for n in record["notes"]) and "another grid" in page.read_text()
    views = display_views(fine.nifti("image"), fine.nifti("rootlets"), fine.nifti("cord"))
    picture = _png(tmp_path / REPORT / "sub-grid" / "rootlets.png")
    x0, y0, x1, y1 = record["figures"]["rootlets"]["panels"]["coronal"]["box_px"]
    rows = [np.argwhere(_colour_mask(picture[y0:y1, x0:x1], level_colour(level_name(v, "spinal"))))[:, 0].mean()
            / (y1 - y0) for v in SPINAL_LEVELS]
    expected = [np.argwhere(views["coronal"].rootlets == v)[:, 0].mean() / views["coronal"].rootlets.shape[0]
                for v in SPINAL_LEVELS]
    assert np.allclose(rows, expected, atol=0.02), "resampled rootlets are not where the fine ones are"
    empty = nib.Nifti1Image(np.zeros_like(fine.rootlets), fine.affine)
    qc_subject(tmp_path, fine.nifti("image"), empty, fine.nifti("cord"), subject="sub-empty")
    assert "no rootlets in the segmentation" in _record(tmp_path, "sub-empty")["warnings"]
    assert "sub-empty" in (tmp_path / REPORT / "index.html").read_text()


def _fifty_subjects(qc_dir: Path) -> list[str]:
    """A 50-subject report: the four real entries of ``qc_folder`` copied under 46 more names (the records and the
    figures as qc_subject wrote them; only the subject's name and folder change), then the index rebuilt."""
    from rootlets_task.qc.report import RECORDS, rebuild_index

    report = qc_dir / REPORT
    originals = [json.loads(p.read_text()) for p in sorted((report / RECORDS).glob("*.json"))]
    for n in range(50 - len(originals)):
        record = dict(originals[n % len(originals)])
        key = f"sub-{n + 100:03d}"
        shutil.copytree(report / record["key"], report / key)
        record.update(subject=key, key=key, page=f"{key}/index.html", thumbnail=f"{key}/thumbnail.png",
                      strip=f"{key}/strip.png")
        (report / RECORDS / f"{key}.json").write_text(json.dumps(record))
    rebuild_index(qc_dir)
    return sorted(json.loads(p.read_text())["subject"] for p in (report / RECORDS).glob("*.json"))


def test_strip_lies_down_with_the_levels_left_to_right(qc_folder):
    qc_dir, phantoms = qc_folder
    picture = _png(qc_dir / REPORT / "sub-LPI" / "strip.png")
    assert picture.shape[0] == 28 and picture.shape[1] > 2 * picture.shape[0], "a strip: wider than high"
    colours = [np.array(to_rgb(level_colour(level_name(v, "spinal")))) * 255 for v in SPINAL_LEVELS]
    nearest = np.argmin([np.abs(picture - c).sum(axis=-1) for c in colours], axis=0)  # resized: colours blend a little
    close = np.min([np.abs(picture - c).sum(axis=-1) for c in colours], axis=0) < 60
    columns = [np.argwhere(close & (nearest == i))[:, 1] for i in range(len(colours))]
    middles = [c.mean() for c in columns if len(c)]
    assert len(middles) >= 6 and middles == sorted(middles), "rostral levels on the left, caudal on the right"


@pytest.mark.skipif(not chromium_path(),
                    reason="chromium is not installed (apt-get install chromium); CI installs it")
def test_index_of_fifty_subjects_fits_about_two_screens(qc_folder, tmp_path):
    """One line per subject with a strip thumbnail: the page of 50 subjects is measured in headless Chromium (1280 x
    900 window), each column sorts, the filters and the one-by-one review still work."""
    source, _ = qc_folder
    qc_dir = tmp_path / "qc"
    shutil.copytree(source, qc_dir)
    subjects = _fifty_subjects(qc_dir)
    assert len(subjects) == 50
    order = "Array.from(document.querySelectorAll('#subjects tbody tr')).filter(r => !r.hidden).map(r => r.dataset.subject)"
    with Chromium(tmp_path / "profile") as browser:
        browser.open((qc_dir / REPORT / "index.html").as_uri())
        loaded = browser.evaluate("""Promise.all(Array.from(document.images).map(i => { i.loading = "eager";
            return i.decode().catch(() => null); })).then(() => Array.from(document.images).map(i => i.naturalWidth))""")
        assert len(loaded) == 50 and min(loaded) > 0
        heights = browser.evaluate("Array.from(document.querySelectorAll('#subjects tbody tr'))"
                                   ".map(r => r.getBoundingClientRect().height)")
        page = browser.evaluate("document.documentElement.scrollHeight")
        shot = browser.screenshot(Path(os.environ.get("ROOTLETS_TEST_SCREENSHOTS", tmp_path)) / "index_50.png")
        print(f"QC index of 50 subjects: {page} px high ({max(heights):.0f} px per row), screenshot {shot}")
        assert max(heights) <= 40, "one line per subject"
        assert browser.evaluate("document.documentElement.scrollWidth") <= 1280, "no sideways scrolling"
        assert Image.open(shot).height == page <= 2 * 900 + 100, "50 subjects on about two 900 px screens"
        assert browser.evaluate(order) == subjects
        for key, first in (("subject", subjects[0]), ("confidence", None), ("warn", None), ("numbering", None),
                           ("created", None), ("levels", None), ("shift", None), ("verdict", None)):
            browser.evaluate(f"document.querySelector('th[data-key=\"{key}\"]').click()")
            ascending = browser.evaluate(order)
            assert sorted(ascending) == subjects and (first is None or ascending[0] == first), key
            browser.evaluate(f"document.querySelector('th[data-key=\"{key}\"]').click()")
            assert sorted(browser.evaluate(order)) == subjects, key
        browser.evaluate("document.querySelector('th[data-key=\"warn\"]').click()")
        counts = browser.evaluate("Array.from(document.querySelectorAll('#subjects tbody tr')).map(r => +r.dataset.warn)")
        assert counts == sorted(counts) and counts[-1] > 0, "ascending: the most warnings last"
        filtered = """(q) => { const box = document.getElementById("filter"); box.value = q;
            box.dispatchEvent(new Event("input")); return document.getElementById("count").textContent; }"""
        assert browser.evaluate(f"({filtered})('sub-1')") == "46 of 50 shown"
        browser.evaluate("document.querySelector('th[data-key=\"subject\"]').click()")
        assert len(browser.evaluate(order)) == 46, "a sort keeps the filter"
        browser.evaluate(f"({filtered})('')")
        browser.evaluate("document.querySelector('#subjects tbody tr td.thumb a').click()")
        assert browser.evaluate("document.getElementById('viewer').hidden") is False
        assert browser.evaluate("document.querySelectorAll('#v-figures img').length") == 2
        assert browser.errors == []


def test_the_measure_figure_is_shown_checked_and_removed_when_no_longer_given(tmp_path):
    """``QcOptions.measure``: a PNG is copied in and shown; anything else is refused in one line before any file is
    written; a later page without it drops the earlier run's copy."""
    ph = make_phantom("LPI", (2.0, 2.0, 2.0), seed=1)
    png = tmp_path / "sub-m_measure.png"
    Image.new("RGB", (40, 20), "white").save(png)
    page = qc_subject(tmp_path / "qc", ph.nifti("image"), ph.nifti("rootlets"), subject="sub-m", measure=png)
    assert (page.parent / "measure.png").read_bytes() == png.read_bytes() and 'src="measure.png"' in page.read_text()
    assert _record(tmp_path / "qc", "sub-m")["figures"]["measure"] == {"file": "measure.png"}
    not_png = tmp_path / "table.csv"
    not_png.write_text("level,csa\n")
    before = sorted(p.name for p in page.parent.iterdir())
    with pytest.raises(RootletsError, match=r"measure figure .*table\.csv: not a PNG image") as raised:
        qc_subject(tmp_path / "qc", ph.nifti("image"), ph.nifti("rootlets"), subject="sub-m", measure=not_png)
    assert "\n" not in str(raised.value) and sorted(p.name for p in page.parent.iterdir()) == before
    with pytest.raises(RootletsError, match="not a PNG image"):  # into a new QC folder: not even the folder is made
        qc_subject(tmp_path / "fresh", ph.nifti("image"), ph.nifti("rootlets"), subject="sub-m", measure=not_png)
    assert not (tmp_path / "fresh").exists()
    qc_subject(tmp_path / "qc", ph.nifti("image"), ph.nifti("rootlets"), subject="sub-m")
    assert not (page.parent / "measure.png").exists() and "measure.png" not in page.read_text()

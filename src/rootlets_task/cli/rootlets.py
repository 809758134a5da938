"""The ``rootlets`` command: parses arguments and calls the public Python API, nothing more.

``rootlets -i IMG ...`` behaves like ``sct_deepseg rootlets``; the other jobs are sub-commands
(``rootlets phantom``, ``rootlets demo``, ...). Errors in the user's input are printed as one line and give
exit code 1; argument errors give exit code 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from rootlets_task.core.errors import RootletsError
from rootlets_task.core.options import (
    DEVICES,
    MEASURE_METHODS,
    METHODS,
    PRECISIONS,
    RENUMBER,
    SOURCES,
    ChainOptions,
    MeasureOptions,
    ModelOptions,
)
from rootlets_task.qc.sct_report import PLANES

SCT_NOTES = """\
`rootlets -i IMG ...` is a drop-in for `sct_deepseg rootlets -i IMG ...` (SCT 7.0 to 7.4): every argument of
`sct_deepseg rootlets` is accepted with SCT's meaning, values and defaults. Abbreviated flags are refused (SCT's parser
reads e.g. `-larg 1` as `-largest 1` and `-c t2` as `-custom-url t2`): no flag is ever read as another.

SCT 6.x's `-task TASK` gets SCT 7.x's answer: the new spelling in one line, exit 0, nothing run.

SCT's post-processing (-thr -> -largest -> -fill-holes -> -remove-small, in that order, on the label map in the
input's grid) was made for binary masks; on the multi-class rootlets map (value = spinal level) it is applied
exactly as SCT applies it, which is rarely useful:
  -thr T (T not 0)  every voxel above T becomes 1: the levels are lost (-thr 0 does nothing, as in SCT);
  -largest 1        keeps only the largest 6-connected blob of rootlets (levels mixed): every other rootlet goes;
  -fill-holes 1     refused (exit 1) unless -thr makes the map binary: SCT stops there with an AssertionError;
  -remove-small N   removes 18-connected blobs below N voxels (or N mm3), levels mixed; one value only.

Kept on purpose where rootlets differs from sct_deepseg rootlets:
  - several -i: each input gets its own output <input>_rootlets.nii.gz (SCT writes every result to the first
    input's name, so only the last survives); with -o FILE.nii.gz only one input is allowed;
  - -o X not ending in .nii/.nii.gz is a folder that receives <input>_rootlets.nii.gz (SCT writes X.nii, then fails);
  - a missing -i file is exit code 1 with one line (SCT: exit code 2 after its whole help);
  - -r is accepted and does nothing: rootlets keeps no temporary files (SCT's -r 0 keeps its temp folder);
  - -install does nothing when the release is installed and current (SCT always downloads again);
  - -custom-url takes one or several URLs or zip files, tried in order (SCT: exactly one for rootlets); without
    -install it is ignored, as in SCT;
  - -qc-seg is accepted and ignored (SCT's rootlets QC ignores it too); -qc-plane is only recorded in the QC entry
    (SCT's rootlets QC is always the axial mosaic);
  - argument errors are one line (SCT prints its whole help first);
  - beside each output a BIDS .tsv names its values, and each output folder gets the FSLeyes and ITK-SNAP lookup
    tables in the QC colours (rootlets_task_spinal.lut, rootlets_task_spinal_itksnap.txt, ...), for viewers.
  - every output is uint8, -fill-holes 1 included (SCT writes that one as int64: same values);
  - an input whose qform_code is 0 keeps qform_code 0 in the output (SCT sets it to 2, aligned); the sform and the
    affine are the input's, as in SCT;
  - the export's resampling of the logits back to the input grid is ours (float32 trilinear, nnU-Net's maths; SCT:
    nnU-Net's float64): on an oblique image that needed resampling, 1 of 219,375 voxels differed from SCT 7.4.

-qc DIR: one entry per image in SCT's QC report in DIR (SCT's layout, JSON, lock; `command` sct_deepseg), listed by
SCT's DIR/index.html beside SCT's own steps (now if DIR holds SCT's report, else after SCT's next QC entry there);
the rootlets_task report (sagittal/coronal views, levels) goes to DIR/rootlets_task/index.html.
First use: a missing or outdated model release is installed before segmenting, as sct_deepseg does.
"""


class _StrictParser(argparse.ArgumentParser):
    """A parser that never reads a flag as the abbreviation of another (``allow_abbrev=False`` does not cover
    single-dash flags before Python 3.12.7 / 3.13.1): ``-larg`` is an error, not ``-largest``. A one-letter flag
    joined to its value (``-v2``, ``-r0``) still works, as in SCT, unless the token also begins a longer flag."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _get_option_tuples(self, option_string: str) -> list:
        found = super()._get_option_tuples(option_string)
        if self.allow_abbrev:
            return found
        longer = sorted(o for o in self._option_string_actions if o.startswith(option_string) and o != option_string)
        if longer:
            self.error(f"unrecognized argument: {option_string} (abbreviations are off; did you mean "
                       f"{' or '.join(longer)}?)")
        return [t for t in found if t[1] == option_string[:2]]


class _OneLineErrors(_StrictParser):
    """Argument errors as one line (exit code 2), not the usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} -h`)\n")


class _SctTaskFlag(argparse.Action):
    """SCT 6.x's ``-task TASK``: as ``sct_deepseg`` 7.x does, say the new spelling and stop there (exit 0, nothing run).

    SCT 7.0 replaced ``sct_deepseg -task seg_spinal_rootlets_t2w`` by ``sct_deepseg rootlets``; its parser keeps a
    hidden ``-task`` that prints the new spelling and exits 0. Ours says it in one line, and names the release that
    SCT 6.x ran for that task (``-release TAG`` runs the same model here).
    """

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=argparse.SUPPRESS):
        super().__init__(option_strings, dest=dest, default=default, nargs="?", metavar="TASK", help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from rootlets_task.models.releases import RELEASES

        task = values or "TASK"
        tags = [r.tag for r in RELEASES.values() if r.sct_task == task and r.sct_task != "rootlets"]
        old = f"; SCT {RELEASES[tags[0]].sct_versions}'s {task} model is release {tags[0]} (-release {tags[0]})" \
            if tags else ""
        print(f"rootlets: the '-task' flag was deprecated in SCT 7.0: `sct_deepseg -task {task} ...` is now "
              f"`sct_deepseg rootlets ...`, here `rootlets ...` without -task{old}")  # on stdout, as SCT's printv
        parser.exit(0)


RENUMBER_HELP = ("none (default): never rename a level; a numbering that does not fit the vertebral levels is only "
                 "reported (warning, levels JSON, QC); suggested: apply the numbering check's suggested renumbering "
                 "(recorded in the outputs)")


def _segment_parser() -> argparse.ArgumentParser:
    p = _OneLineErrors(
        prog="rootlets", allow_abbrev=False, formatter_class=_Help, epilog=SCT_NOTES,
        description="Segment spinal nerve rootlets (RootletSeg nnU-Net), like `sct_deepseg rootlets`. "
        "Sub-commands: " + ", ".join(COMMANDS) + " (see `rootlets COMMAND -h`).",
    )
    p.add_argument("-task", action=_SctTaskFlag)  # hidden, as in SCT 7.x: SCT 6.x's spelling gets the new one
    io = p.add_argument_group("input/output (SCT's)")
    io.add_argument("-i", nargs="+", metavar="IMG", help="input NIfTI image(s); several run with one model load")
    io.add_argument("-o", metavar="OUT", help="output file if it ends in .nii/.nii.gz (one input), else a folder for "
                    "<input>_rootlets.nii.gz of every input; default: <input>_rootlets.nii.gz beside each input")
    tasks = p.add_argument_group("tasks (SCT's)")
    tasks.add_argument("-install", action="store_true", help="install the model release (-release) and exit")
    tasks.add_argument("-custom-url", nargs="+", metavar="URL", help="with -install: install from these URL(s) or local "
                       "zip(s), tried in order; ignored without -install (as in SCT)")
    _add_postprocess_arguments(p.add_argument_group("parameters (SCT's)"))
    _add_sct_misc_arguments(p.add_argument_group("misc (SCT's)"))
    ours = p.add_argument_group("rootlets_task options")
    ours.add_argument("-release", metavar="TAG", help="model release tag (default: the one -install installed last, "
                      "else r20250318; `phantom` is the bundled demo release; `sct` = the model SCT has installed); "
                      "see `rootlets releases`")
    ours.add_argument("-device", default="auto", choices=DEVICES, help="compute device")
    ours.add_argument("-precision", default="float32", choices=PRECISIONS, help=PRECISION_HELP)
    ours.add_argument("-allow-release-code", action="store_true", help="accept a release that ships Python code "
                      "(SCT's trainer_class.py) at -install, and let it run when segmenting (-release sct); that code "
                      "runs with your rights, so only for releases you trust")
    ours.add_argument("-sct", action="store_true", help="with -install: install the release into SCT's model folder "
                      "($SCT_DIR or the SCT of sct_deepseg on PATH) so `sct_deepseg rootlets` uses it; `-release sct` "
                      "segments with the model SCT has installed")
    ours.add_argument("-sct-status", action="store_true", help="show the SCT found, its version and its rootlets model")
    ours.add_argument("-restore", action="store_true", help="with -install -sct: put back the SCT model that the last "
                      "`rootlets -install -sct` replaced (each one is kept beside SCT's model folder); no network")
    _add_chain_arguments(p)
    return p


def _add_postprocess_arguments(g) -> None:
    g.add_argument("-thr", type=float, metavar="T", help="binarize: voxels above T become 1, the others 0; the levels "
                   "are lost (0 or not given: no thresholding). Hidden in SCT 7.1+'s help, still accepted there")
    g.add_argument("-largest", type=int, default=0, choices=[0, 1], help="1: keep only the largest 6-connected blob of "
                   "nonzero voxels, whatever its levels (SCT's; removes every other rootlet)")
    g.add_argument("-fill-holes", type=int, default=0, choices=[0, 1], help="1: fill holes of a binary map; refused on "
                   "the multi-class rootlets map (as SCT refuses it) unless -thr binarizes it first")
    g.add_argument("-remove-small", nargs="+", metavar="N[vox|mm3]", help="remove 18-connected blobs of nonzero voxels "
                   "smaller than N voxels (5vox, 5) or N mm3 (10mm3); the unit is read from the last value, one value "
                   "only for rootlets (one class)")
    g.add_argument("-test-time-aug", action="store_true", help="mirroring test-time augmentation (8x slower)")


def _add_sct_misc_arguments(g) -> None:
    g.add_argument("-qc", metavar="DIR", help="QC folder: an entry per image in SCT's QC report there, and the "
                   "rootlets_task report in DIR/rootlets_task/")
    g.add_argument("-qc-dataset", metavar="NAME", help="dataset name of the QC entry (None: the folder 3 levels above "
                   "the input, as SCT)")
    g.add_argument("-qc-subject", metavar="NAME", help="subject name of the QC entry (None: the folder 2 levels above "
                   "the input, as SCT)")
    g.add_argument("-qc-plane", default="Axial", choices=PLANES, help="recorded in the QC entry (SCT's rootlets "
                   "QC, like ours, is always the axial mosaic); hidden in SCT 7.1+'s help")
    g.add_argument("-qc-seg", metavar="FILE", help="accepted and ignored: SCT's rootlets QC ignores it too")
    g.add_argument("-v", type=int, default=1, choices=[0, 1, 2], help="verbosity: 0 warnings and errors, 1 progress, "
                   "2 debug")
    g.add_argument("-r", type=int, default=1, choices=[0, 1], help="SCT's 'remove temporary files': accepted, no effect "
                   "(rootlets keeps no temporary files)")
    g.add_argument("-profile-time", nargs="?", const=".", metavar="FILE|DIR", help="write cProfile's table (sorted by "
                   "cumulative time) to FILE (.prof: binary), or to DIR/time_profiling_results.txt; no value: ./")
    g.add_argument("-trace-memory", nargs="?", const=".", metavar="DIR", help="write the peak of Python's traced memory "
                   "(KiB) to DIR/peak_memory.txt; no value: ./")


def _add_chain_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("image to levels in one command (-levels)")
    g.add_argument("-levels", action="store_true", help="also get the cord, discs and PMJ and derive spinal and "
                   "vertebral levels (see docs/levels.md)")
    g.add_argument("-rootlets", metavar="FILE", help="existing rootlets file to use instead of segmenting (e.g. "
                   "corrected); was -r before -r became SCT's")
    g.add_argument("-s", metavar="CORD", help="spinal cord segmentation to use (else sct_deepseg spinalcord)")
    g.add_argument("-discs", metavar="DISCS", help="single-voxel disc labels, SCT numbering (3 = C2/C3)")
    g.add_argument("-pmj", metavar="PMJ", help="single-voxel PMJ label (else sct_detect_pmj when installed)")
    _add_source_arguments(g)
    g.add_argument("-c", default="t2", choices=["t1", "t2"], help="contrast for sct_detect_pmj")
    g.add_argument("-method", default="gapfree", choices=METHODS, help="spinal level method")
    g.add_argument("-renumber", default="none", choices=RENUMBER, help=RENUMBER_HELP)
    g.add_argument("-crop-to-cord", action="store_true", help="segment only a sub-image around the cord: about 3x "
                   "faster on CPU, labels can differ from the uncropped ones (docs/segment.md)")
    g.add_argument("-ofolder", metavar="DIR", help="output folder (default: beside each input)")
    g.add_argument("-overwrite", action="store_true", help="recompute every step even when up to date")
    _add_measure_arguments(g)


MEASURE_HELP = ("measure per spinal and vertebral level: cord CSA (as sct_process_segmentation), length, shape, and "
                "the mean, median, SD and voxel count of each MAP given (NAME=PATH or PATH; none: morphometry only) "
                "within the cord or -measure-mask; writes *_measure.csv/.tsv/.json/.png (docs/levels.md)")


def _add_measure_arguments(g) -> None:
    g.add_argument("-template", action="store_true", help="register to the PAM50 template with the rootlets (SCT >= 7.0: "
                   "sct_register_to_template -lrootlet, sct_warp_template): PAM50's spinal levels in the image as a third "
                   "kind of spinal levels (*_levels_pam50.csv, compared with the rootlets' levels), the rootlets and levels "
                   "in PAM50 space (*_space-PAM50.*)")
    g.add_argument("-measure", nargs="*", metavar="MAP", help=MEASURE_HELP)
    g.add_argument("-measure-mask", metavar="MASK", help="mask for the maps (e.g. white matter; default: the cord)")
    g.add_argument("-measure-method", default="bin", choices=MEASURE_METHODS, help="bin: mean over mask voxels >= 0.5; "
                   "wa: mask-weighted average (sct_extract_metric -method)")


def _add_source_arguments(g) -> None:
    g.add_argument("-cord-from", default="auto", choices=["auto", *SOURCES["cord"]], help="cord source (auto: -s, else SCT)")
    g.add_argument("-discs-from", default="auto", choices=["auto", *SOURCES["discs"]],
                   help="disc source; auto: the first available of -discs, sct_deepseg spine, sct_label_vertebrae, "
                   "totalspineseg, spineps, none")
    g.add_argument("-pmj-from", default="auto", choices=["auto", *SOURCES["pmj"]],
                   help="PMJ source (auto: -pmj, else sct_detect_pmj, else none)")


PRECISION_HELP = ("float32 (default): exact, on every CPU; int8: the network quantised with NNCF (opt-in lever: faster "
                  "on CPU, labels change a little; calibrated on the first input(s), quantised once and cached); bf16: "
                  "the network in bfloat16 (opt-in lever, CPUs with avx512_bf16 or AMX only; labels change a little). "
                  "Check a lever with `rootlets speedcheck`; -v 2 shows the precision that runs")


def _model(args: argparse.Namespace) -> ModelOptions:
    return ModelOptions(release=args.release, device=args.device, test_time_aug=args.test_time_aug,
                        threads=getattr(args, "threads", None), allow_code=getattr(args, "allow_release_code", False),
                        precision=getattr(args, "precision", "float32"))


def _chain_options(args: argparse.Namespace, contrast: str = "t2") -> ChainOptions:
    return ChainOptions(cord_from=args.cord_from, discs_from=args.discs_from, pmj_from=args.pmj_from, method=args.method,
                        contrast=contrast, crop_to_cord=args.crop_to_cord, overwrite=args.overwrite, renumber=args.renumber,
                        measure=tuple(args.measure) if args.measure is not None else None, measure_mask=args.measure_mask,
                        measure_method=args.measure_method, template=args.template)


def _run_chain(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from rootlets_task.pipeline.chain import ChainInputs, run_chain

    if args.o:
        parser.error("with -levels, give the output folder with -ofolder (-o is the rootlets file of plain segmentation)")
    if len(args.i) > 1 and (args.rootlets or args.s or args.discs or args.pmj):
        parser.error("-rootlets, -s, -discs and -pmj belong to one image: give a single -i with them")
    segmenter = None
    inputs = ChainInputs(cord=args.s, discs=args.discs, pmj=args.pmj, rootlets=args.rootlets)
    for image in args.i:
        result = run_chain(image, out_dir=args.ofolder, inputs=inputs, options=_chain_options(args, args.c),
                           model=_model(args), segmenter=segmenter, qc_dir=args.qc)
        segmenter = result.segmenter or segmenter
        print(f"{image}: cord from {result.sources['cord']}, discs from {result.sources['discs']}, "
              f"PMJ from {result.sources['pmj']}")
        print(result.table())
        for name, path in result.outputs.items():
            print(f"{name:10s} {_shown(path)}")
        print(f"{'view':10s} {result.view}")


def _run_segment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from rootlets_task.cli import profiling

    with profiling.profile_time(args.profile_time), profiling.trace_memory(args.trace_memory):
        _segment_or_install(args, parser)


def _segment_or_install(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from rootlets_task.models import install, sct

    if args.sct_status:
        print(sct.format_status(sct.sct_status()))
        return
    if args.sct and not args.install:
        parser.error("-sct only works with -install (to segment with SCT's model, use -release sct)")
    if args.restore and not (args.install and args.sct):
        parser.error("-restore only works with -install -sct (it puts back the SCT model an install replaced)")
    if args.restore and (args.release or args.custom_url):
        parser.error("-restore puts back the model SCT had: give it no -release or -custom-url")
    if args.restore:
        _, message = sct.restore_sct()
        if args.v:
            print(message)
        return
    if args.install and args.release == "sct" and not args.sct:
        parser.error("-release sct segments with SCT's installed model; to install into SCT use -install -sct -release TAG")
    if args.install and args.sct:
        _, message = sct.install_sct(args.release, custom_url=args.custom_url, progress=args.v > 0,
                                     allow_code=args.allow_release_code)
        if args.v:
            print(message)
        return
    if args.install:
        installed = install.install_release(args.release, custom_url=args.custom_url, progress=args.v > 0,
                                            allow_code=args.allow_release_code)
        if args.v:
            print(installed.message())
        return
    if not args.i:
        parser.error("-i is required (or -install); SCT: You must specify either a task name + '-install', a task "
                     "name + an image ('-i'), or '-task-details'.")
    chain_only = [f for f, v in (("-rootlets", args.rootlets), ("-s", args.s), ("-discs", args.discs),
                                 ("-pmj", args.pmj), ("-ofolder", args.ofolder), ("-overwrite", args.overwrite),
                                 ("-crop-to-cord", args.crop_to_cord), ("-renumber", args.renumber != "none"),
                                 ("-measure", args.measure is not None), ("-measure-mask", args.measure_mask),
                                 ("-template", args.template)) if v]
    if args.levels:
        return _run_chain(args, parser)
    if chain_only:
        parser.error(f"{', '.join(chain_only)} only work with -levels")
    _segment(args)


def _segment(args: argparse.Namespace) -> None:
    """``rootlets -i ...`` as ``sct_deepseg rootlets -i ...``: SCT's flags become options of segment_files."""
    import logging

    from rootlets_task.inference.postprocess import PostOptions
    from rootlets_task.pipeline import segment
    from rootlets_task.qc.sct_report import QcNames

    log = logging.getLogger("rootlets_task.cli.rootlets")
    if args.custom_url:
        log.warning("-custom-url is only used with -install; ignored (as sct_deepseg does)")
    if args.qc_seg:
        log.info("-qc-seg %s: ignored, as in SCT (the rootlets QC is centred on the rootlets)", args.qc_seg)
    if args.r == 0:
        log.info("-r 0: rootlets keeps no temporary files, so there is nothing to keep")
    post = PostOptions(thr=args.thr, largest=args.largest, fill_holes=args.fill_holes,
                       remove_small=tuple(args.remove_small) if args.remove_small else None)
    names = QcNames(dataset=args.qc_dataset, subject=args.qc_subject, plane=args.qc_plane)
    outputs = segment.segment_files(args.i, output=args.o, model=_model(args), qc=args.qc, argv=args.argv,
                                    verbose=args.v, post=post, qc_names=names)
    for out in outputs:
        print(_shown(out))


def _phantom_parser() -> argparse.ArgumentParser:
    p = _StrictParser(prog="rootlets phantom", description="Write a synthetic T2w-like cervical phantom "
                                "with its ground truth (rootlets, cord, discs, PMJ, levels).")
    p.add_argument("-o", required=True, metavar="DIR", help="output folder")
    p.add_argument("-orient", default="LPI", help="SCT orientation code of the image (LPI, RPI, AIL, PSR ...)")
    p.add_argument("-spacing", nargs=3, type=float, default=(1.0, 1.0, 1.0), metavar=("X", "Y", "Z"),
                   help="voxel size in mm of array axes 1, 2, 3")
    p.add_argument("-seed", type=int, default=0, help="random seed (anatomy jitter and noise)")
    p.add_argument("-tilt", type=float, default=0.0, metavar="DEG", help="oblique tilt about the left-right axis")
    p.add_argument("-subject", metavar="LABEL", help="name the files as a BIDS subject's: sub-LABEL_T2w.nii.gz and its "
                   "labels sub-LABEL_T2w_label-SC_seg, _label-discs_dlabel, _label-PMJ_dlabel (what `rootlets -i "
                   "... -levels` takes); default phantom_T2w*")
    return p


def _run_phantom(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from rootlets_task.io.phantom import write_phantom

    prefix = "phantom_T2w"
    if args.subject is not None:
        label = args.subject.removeprefix("sub-")
        if not label.isascii() or not label.isalnum():
            raise RootletsError(f"-subject {args.subject}: a BIDS subject label is letters and digits only (e.g. 01)")
        prefix = f"sub-{label}_T2w"
    for kind, path in write_phantom(args.o, args.orient, tuple(args.spacing), args.seed, args.tilt, prefix).items():
        print(f"{kind:17s} {_shown(path)}")


def _releases_parser() -> argparse.ArgumentParser:
    p = _StrictParser(prog="rootlets releases", description="List the model releases: what each segments, "
                                "whether it is installed, current or outdated, and where models are stored.")
    p.add_argument("-json", action="store_true", help="print the list as JSON")
    return p


def _run_releases(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    import json

    from rootlets_task.models.install import ENV_HOME, models_dir, release_status

    rows = release_status()
    if args.json:
        print(json.dumps({"models_dir": str(models_dir()), "releases": rows}, indent=2))
        return
    print(f"Model releases (stored in {models_dir()}; set {ENV_HOME} to move them)")
    table = [("", "TAG", "DATE", "LEVELS", "ROOTLETS", "CONTRASTS", "STATUS")] + [
        (("*" if r["default"] else "") + (">" if r["active"] else ""), r["tag"], r["date"], r["levels"], r["rootlets"],
         ", ".join(r["contrasts"]),
         (f"installed {r['installed_at'][:10]}, " if r["installed"] else "") + r["status"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print("* default release; > the release that runs without -release (the one `rootlets -install` installed last). "
          "Install one with `rootlets -install -release TAG`.")


def _qc_parser() -> argparse.ArgumentParser:
    p = _StrictParser(prog="rootlets qc", description="Write a subject's QC (rootlets over the image, "
                                "levels figure, HTML page) into a QC folder and refresh its index.html.")
    p.add_argument("-i", required=True, metavar="IMG", help="the image the rootlets were segmented on")
    p.add_argument("-r", required=True, metavar="ROOTLETS", help="rootlets segmentation (value = spinal level)")
    p.add_argument("-s", metavar="CORD", help="spinal cord segmentation (centres the views, drawn as an outline)")
    p.add_argument("-discs", metavar="DISCS", help="disc labels (SCT numbering), drawn as numbered points")
    p.add_argument("-levels", metavar="TABLE", help="levels table (*_levels.csv or .json from `rootlets levels`)")
    p.add_argument("-shift", metavar="TABLE", help="shift table (*_shift.csv); default: derived from -levels")
    p.add_argument("-qc", required=True, metavar="DIR", help="QC folder (shared by all subjects of a dataset)")
    p.add_argument("-qc-subject", metavar="NAME", help="subject name in the report (default: the image file name)")
    p.add_argument("-slab", type=float, nargs=2, default=(12.0, 6.0), metavar=("SAG", "COR"),
                   help="half-thickness (mm) of the rootlets projection: sagittal (left-right), coronal (front-back)")
    return p


def _run_qc(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from rootlets_task.qc.report import QcOptions, qc_subject
    from rootlets_task.qc.views import check_slab

    try:
        check_slab(args.slab)  # the library's bound, as an argument error
    except RootletsError as exc:
        parser.error(str(exc))
    options = QcOptions(subject=args.qc_subject, provenance={"command": "rootlets qc", "slab_mm": args.slab},
                        slab_mm=tuple(args.slab))
    page = qc_subject(args.qc, args.i, args.r, args.s, args.discs, args.levels, args.shift, options=options)
    print(_shown(page))


def _levels_parser() -> argparse.ArgumentParser:
    p = _StrictParser(prog="rootlets levels", description="Spinal levels from rootlets, vertebral levels "
                                "from disc labels, distances along the cord centerline and their shift (no model needed).")
    p.add_argument("-r", required=True, metavar="ROOTLETS", help="rootlets segmentation (value = spinal level, 2 = C2)")
    p.add_argument("-s", required=True, metavar="CORD", help="spinal cord segmentation (binary)")
    p.add_argument("-discs", metavar="DISCS", help="single-voxel disc labels, SCT numbering (3 = C2/C3)")
    p.add_argument("-pmj", metavar="PMJ", help="single-voxel pontomedullary junction label (distance reference)")
    p.add_argument("-i", metavar="IMAGE", help="image whose grid the outputs use (default: the rootlets grid)")
    p.add_argument("-method", default="gapfree", choices=METHODS,
                   help="gapfree: contiguous levels, boundaries halfway between neighbours, distances from the PMJ "
                   "(default); reference: the published scripts' numbers (each level spans its rootlets, gaps stay 0; "
                   "distances from the top of the cord + PMJ centerline, as the lab measures them; also writes the "
                   "lab's CSV layout, *_levels_lab.csv)")
    p.add_argument("-renumber", default="none", choices=RENUMBER, help=RENUMBER_HELP)
    p.add_argument("-dilate", type=int, default=3, metavar="N", help="radius in voxels of the ball the cord is "
                   "dilated by to find the rootlets' entry zone (default 3, as published)")
    p.add_argument("-o", metavar="OUTDIR", help="output folder (default: beside the rootlets file)")
    p.add_argument("-prefix", metavar="NAME", help="output name prefix (default: the rootlets file name)")
    return p


def _run_levels(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from rootlets_task.levels.compute import MAX_DILATE_VOXELS, LevelsOptions, levels_from_files

    if not 0 <= args.dilate <= MAX_DILATE_VOXELS:
        parser.error(f"-dilate {args.dilate}: give a radius from 0 to {MAX_DILATE_VOXELS} voxels (published: 3)")
    from rootlets_task.levels.compute import origin_text

    options = LevelsOptions(method=args.method, dilate_voxels=args.dilate, renumber=args.renumber)
    outputs, result = levels_from_files(args.r, args.s, args.discs, args.pmj, args.i, args.o, prefix=args.prefix,
                                        options=options)  # warnings are logged (stderr)
    cols = ["kind", "level", "rostral_mm", "caudal_mm", "mid_mm", "height_mm", "mean_probability", "suggested_level",
            "original_level", "status"]
    table = result.levels[[c for c in cols if result.levels[c].notna().any()]]
    assert result.origin is not None and result.numbering is not None  # compute_levels sets both
    print(origin_text(result.reference, result.origin.note()))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}" if abs(v) < 1 else f"{v:.1f}"))
    if not result.numbering.warns:  # a warning was logged already
        print(result.numbering.text)
    if "shift" in outputs:
        shift = result.shift
        print(shift[shift["pairing"] == "shifted"].to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    for path in outputs.values():
        print(_shown(path))
    from rootlets_task.io.viewers import fsleyes_command

    print("view:", fsleyes_command(args.i, [(k, outputs[k]) for k in ("spinal", "vertebral") if k in outputs]))


def _measure_parser() -> argparse.ArgumentParser:
    p = _StrictParser(prog="rootlets measure", description="Measure per spinal and vertebral level (no model needed): "
                                "cord morphometry as sct_process_segmentation computes it (angle-corrected CSA, length, "
                                "diameters) and map statistics as sct_extract_metric (mean, median, SD, voxel count).")
    p.add_argument("-i", required=True, metavar="IMAGE", help="the image the levels and the cord lie on (its grid)")
    p.add_argument("-s", metavar="CORD", help="spinal cord segmentation (default: the union of the level files)")
    p.add_argument("-spinal", metavar="LEVELS", help="spinal levels (X_spinal_levels.nii.gz of rootlets -levels)")
    p.add_argument("-vertebral", metavar="LEVELS", help="vertebral levels (X_vertebral_levels.nii.gz)")
    p.add_argument("-map", nargs="+", default=[], metavar="MAP", help="maps on the image's space to measure: "
                   "NAME=PATH or PATH (named by its file name)")
    p.add_argument("-mask", metavar="MASK", help="mask for the maps (e.g. white matter; default: the cord)")
    p.add_argument("-method", default="bin", choices=MEASURE_METHODS, help="bin: mean over mask voxels >= 0.5; wa: "
                   "mask-weighted average (sct_extract_metric -method)")
    p.add_argument("-o", metavar="OUTDIR", help="output folder (default: beside the first level file)")
    p.add_argument("-prefix", metavar="NAME", help="output name prefix (default: the image's file name)")
    return p


def _run_measure(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from rootlets_task.pipeline.measuring import measure_files, parse_maps

    levels = {kind: path for kind, path in (("spinal", args.spinal), ("vertebral", args.vertebral)) if path}
    if not levels:
        parser.error("give the levels to measure by: -spinal X_spinal_levels.nii.gz and/or -vertebral ...")
    paths, result = measure_files(args.i, levels, parse_maps(args.map), cord=args.s, mask=args.mask, out_dir=args.o,
                                  prefix=args.prefix, options=MeasureOptions(args.method),
                                  command="rootlets measure " + " ".join(args.argv))
    print(measure_text(result.table))
    for path in paths.values():
        print(_shown(path))


def measure_text(table) -> str:
    """The per-level table as printed: level, slices, CSA, length and each map's mean."""
    columns = ["kind", "level", "slices", "csa_mm2", "length_mm", *[c for c in table.columns if c.endswith("_mean")]]
    return table[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}")


def _stats_parser() -> argparse.ArgumentParser:
    p = _StrictParser(prog="rootlets stats", description="The lab's spinal-vs-vertebral level analysis "
                                "(RootletSeg paper) over many subjects' level tables: per level pair (unshifted "
                                "VL C2-SL C2 ... VL T1-SL C8; shifted VL C2-SL C3 ... VL T1-SL T1) the median bias and "
                                "2.5/97.5 percentile limits of agreement (Bland-Altman), Spearman correlation, linear "
                                "regression, Shapiro-Wilk, RMSE; level sizes; a figure; the levels in the lab's CSV layout.")
    p.add_argument("files", nargs="+", metavar="FILE", help="*_levels.csv of `rootlets levels`, tables of the lab's "
                   "scripts (*_pmj_distance*.csv, spinal_vs_vertebral_levels.csv), or folders to search")
    p.add_argument("-o", required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("-participants", metavar="FILE", help="participants.tsv with body heights (BIDS column 'height', or "
                   "the lab's 'height_sub'), matched on participant_id (or the lab's 'subject')")
    p.add_argument("-normalise", choices=["y", "n"], help="divide each midpoint by the subject's height and multiply by "
                   "the median height, as the paper does (default: y with -participants, else n)")
    return p


def _run_stats(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    import pandas as pd

    from rootlets_task.levels.stats import group_stats

    normalise = None if args.normalise is None else args.normalise == "y"
    outputs = group_stats(args.files, args.o, participants=args.participants, normalise=normalise)
    normalised = normalise if normalise is not None else args.participants is not None
    print("midpoints normalised by body height" if normalised else
          "midpoints not normalised by body height (the paper normalises: give -participants)")
    if "shift" in outputs:
        cols = ["pairing", "pair", "n", "bias_mm", "loa_low_mm", "loa_high_mm", "spearman_rho", "r2", "shapiro_p"]
        print(pd.read_csv(outputs["shift"])[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for path in outputs.values():
        print(_shown(path))


def _batch_parser() -> argparse.ArgumentParser:
    p = _StrictParser(prog="rootlets batch", description="Segment rootlets (and with -levels derive levels) "
                                "in every selected image of a BIDS dataset into a BIDS derivative dataset; resumable "
                                "(finished images are skipped), parallel (-jobs), on a Dask cluster (-dask, -slurm), "
                                "as a SLURM job array (-slurm-array). See docs/batch.md.")
    p.add_argument("bids", metavar="BIDS_ROOT", help="BIDS dataset root (holding sub-*/[ses-*/]anat/)")
    p.add_argument("-o", required=True, metavar="DERIVATIVES",
                   help="output derivative dataset, e.g. BIDS_ROOT/derivatives/rootlets")
    p.add_argument("-contrast", nargs="+", default=["T2w"], metavar="SUFFIX",
                   help="BIDS suffix(es) to process (default T2w; e.g. T1w, UNIT1, MP2RAGE = both inversions, "
                   "inv-1 / inv-2 = one MP2RAGE inversion)")
    p.add_argument("-include", metavar="RE", help="only images whose path inside BIDS_ROOT matches this regex")
    p.add_argument("-exclude", metavar="RE", help="skip images whose path inside BIDS_ROOT matches this regex")
    p.add_argument("-jobs", type=int, help="local worker processes (default 1 = in this process); with -slurm: the "
                   "number of SLURM jobs; with -slurm-array: the number of array tasks (default one per image)")
    p.add_argument("-threads", type=int, metavar="N", help="CPU threads per worker (default: the cores divided among the jobs)")
    engine = p.add_mutually_exclusive_group()
    engine.add_argument("-dask", metavar="ADDRESS", help="run on an existing Dask scheduler, e.g. tcp://HOST:8786")
    engine.add_argument("-slurm", nargs="*", metavar="KEY=VALUE", help="start workers as SLURM jobs with dask-jobqueue "
                        "(pip install 'rootlets_task[slurm]'); SLURMCluster options, e.g. cores=4 memory=16GB "
                        "walltime=04:00:00 queue=NAME account=NAME")
    engine.add_argument("-slurm-array", nargs=argparse.REMAINDER, metavar="SBATCH_OPTION", help="submit one SLURM job "
                        "array and return (no scheduler stays up); every option after it goes to sbatch, so it comes "
                        "last, e.g. -slurm-array --time=02:00:00 --cpus-per-task=4 --mem=8G. Run the same command again "
                        "once it has ended: it merges the tables and resubmits what is missing")
    engine.add_argument("-collect", action="store_true", help="submit nothing: merge the dataset tables of the images "
                        "done (-levels) and report the missing ones and why (e.g. after -slurm-array)")
    p.add_argument("-levels", action="store_true", help="run the whole chain to spinal and vertebral levels per image, "
                   "then dataset tables (levels.csv, shift.csv) and group statistics")
    p.add_argument("-labels", metavar="DIR", help="manual labels derivative (default BIDS_ROOT/derivatives/labels): "
                   "<stem>_label-SC_seg, _label-discs_dlabel, _label-PMJ_dlabel, _label-rootlets_dseg are used when present")
    _add_source_arguments(p)
    p.add_argument("-method", default="gapfree", choices=METHODS, help="spinal level method")
    p.add_argument("-renumber", default="none", choices=RENUMBER, help="with -levels: " + RENUMBER_HELP)
    g = p.add_argument_group("measure per level (with -levels; MAP may hold {subject}, {session}, {name}: e.g. "
                             "derivatives/maps/{subject}/anat/{name}_T2map.nii.gz, relative to the BIDS folder)")
    _add_measure_arguments(g)
    p.add_argument("-crop-to-cord", action="store_true", help="with -levels: segment only a sub-image around the cord "
                   "(about 3x faster on CPU; labels can differ from the uncropped ones)")
    g = p.add_argument_group("speed levers (labels change a little; see `rootlets speedcheck -h`)")
    g.add_argument("-levers", default="none", metavar="{none,auto,LIST}",
                   help="none (default): the exact path; LIST (crop, int8, bf16, crop,int8 or crop,bf16): those levers, "
                   "unchecked (bf16: CPUs with avx512_bf16 or AMX only; crop: the "
                   "cord box of the -levels chain, else the labels folder's cord mask, else sc-crop's); auto: the "
                   "fastest lever that passed `rootlets speedcheck` with this release: its -speedcheck report, or a "
                   "check of the first -levers-check images here (saved in logs/speedcheck.json; those images are "
                   "written from its exact path)")
    g.add_argument("-speedcheck", metavar="FILE.json", help="with -levers auto: the report of `rootlets speedcheck` "
                   "to follow (one made with another release or model is ignored, with a message, and the first "
                   "images are checked instead)")
    g.add_argument("-levers-check", type=int, default=2, metavar="N", help="with -levers auto and no -speedcheck: "
                   "images checked first (default 2)")
    g.add_argument("-precision", default="float32", choices=PRECISIONS, help="int8 = -levers int8 (calibrated on the "
                   "dataset's first two images), bf16 = -levers bf16")
    p.add_argument("-qc", metavar="DIR", help="write a QC report of every image into this folder")
    p.add_argument("-bids-strict", action="store_true", help="BIDS-valid output names (<entities>_desc-rootlets_dseg, "
                   "_label-SC_mask, _desc-discs_dseg ... with dseg.tsv look-up tables and a .bidsignore) instead of the "
                   "SCT/NeuroPoly names (<stem>_rootlets, _label-SC_seg ...)")
    p.add_argument("-continue-on-error", type=int, default=1, choices=[0, 1], help="1 (default): a failed image never "
                   "stops the others; 0: start no new image after the first failure")
    p.add_argument("-release", metavar="TAG", help="model release (default: the one -install installed last, else "
                   "r20250318; see `rootlets releases`)")
    p.add_argument("-test-time-aug", action="store_true", help="mirroring test-time augmentation (8x slower)")
    p.add_argument("-device", default="auto", choices=DEVICES, help="compute device")
    p.add_argument("-overwrite", action="store_true", help="redo every image, even those already done")
    p.add_argument("-v", type=int, default=1, choices=[0, 1, 2], help="verbosity: 0 warnings and the summary only, "
                   "1 a line per image, 2 detail")
    return p


def _run_batch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from rootlets_task.batch.engines import parse_slurm
    from rootlets_task.batch.run import BatchOptions, run_batch

    if args.crop_to_cord and not args.levels:
        parser.error("-crop-to-cord needs the cord, which only -levels computes: add -levels (or use -levers crop)")
    if args.renumber != "none" and not args.levels:
        parser.error("-renumber applies to levels, which only -levels computes: add -levels")
    if (args.measure is not None or args.measure_mask or args.template) and not args.levels:
        parser.error("-measure and -template work on levels, which only -levels computes: add -levels")
    options = BatchOptions(contrasts=tuple(args.contrast), include=args.include, exclude=args.exclude, labels=args.labels,
                           jobs=args.jobs, dask=args.dask, slurm=parse_slurm(args.slurm) if args.slurm is not None else None,
                           slurm_array=tuple(args.slurm_array) if args.slurm_array is not None else None,
                           collect=args.collect, bids_strict=args.bids_strict, qc=args.qc,
                           continue_on_error=bool(args.continue_on_error), overwrite=args.overwrite, progress=args.v > 0,
                           levers=args.levers, speedcheck=args.speedcheck, levers_check=args.levers_check)
    summary = run_batch(args.bids, args.o, options, _model(args), _chain_options(args) if args.levels else None)
    print(summary.text())
    if summary.failed:
        raise RootletsError(f"{len(summary.failed)} of {len(summary.results)} image(s) not done; see the list above "
                            f"and {summary.out}/logs/err.*.log")


def _speedcheck_parser() -> argparse.ArgumentParser:
    from rootlets_task.pipeline.speedcheck import LEVERS, Thresholds

    t = Thresholds()
    p = _StrictParser(prog="rootlets speedcheck", description="Validate the speed levers on your images with "
                                "the installed release: runs the exact path (the same tiles as SCT) and each lever in one "
                                "process, interleaved, and reports per lever the time per image and speed-up, voxel "
                                "agreement, per-level Dice and how far each spinal level's midpoint and boundaries moved "
                                "(mm; on the cord with -s, else along the image's superior-inferior axis). A lever passes "
                                f"when, {t.text()} (-max-mid-voxels, -max-boundary-mm). The JSON report (release tag and "
                                "model sha256, verdicts, figures) is what `rootlets batch -levers auto -speedcheck FILE` "
                                "follows.")
    p.add_argument("images", nargs="+", metavar="IMG", help="images to check (the first two calibrate int8)")
    p.add_argument("-levers", metavar="LIST", help=f"comma list of {', '.join(LEVERS)} (default: all this CPU can run); "
                   "crop needs a cord mask (-s) or the sc-crop package, int8 the int8 extra, bf16 a CPU with avx512_bf16 "
                   "or AMX")
    p.add_argument("-s", nargs="+", metavar="CORD", help="cord mask of every image, in order (crop box and levels)")
    p.add_argument("-release", metavar="TAG", help="model release (default: the one -install installed last, else "
                   "r20250318; see `rootlets releases`)")
    p.add_argument("-o", default="speedcheck.json", metavar="FILE.json", help="report (default speedcheck.json)")
    p.add_argument("-max-mid-voxels", type=float, default=t.max_mid_voxels, metavar="N",
                   help=f"largest level-midpoint move, in voxels of the S-I spacing (default {t.max_mid_voxels:g})")
    p.add_argument("-max-boundary-mm", type=float, default=t.max_boundary_mm, metavar="MM",
                   help=f"largest level-boundary move in mm (default {t.max_boundary_mm:g})")
    p.add_argument("-reps", type=int, default=1, metavar="N", help="timed runs of every path per image (default 1)")
    p.add_argument("-threads", type=int, metavar="N", help="CPU threads (default: every physical core)")
    p.add_argument("-device", default="auto", choices=DEVICES, help="compute device (int8 and bf16 run on CPU only)")
    p.add_argument("-v", type=int, default=1, choices=[0, 1, 2], help="verbosity")
    return p


def _run_speedcheck(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from rootlets_task.core.files import keep_inputs, writable_folder
    from rootlets_task.pipeline.speedcheck import (
        CheckOptions,
        Thresholds,
        check_levers,
        default_levers,
        format_report,
        parse_levers,
        write_report,
    )

    levers = parse_levers(args.levers) if args.levers is not None else default_levers()
    thresholds = Thresholds(args.max_mid_voxels, args.max_boundary_mm).check()
    if Path(args.o).is_dir():
        raise RootletsError(f"-o {args.o}: is a folder; give the report's file name (e.g. {Path(args.o) / 'speedcheck.json'})")
    writable_folder(Path(args.o).absolute().parent, flag="-o")
    keep_inputs([args.o], {f"the {kind} {p}": p for kind, files in (("image", args.images), ("cord mask", args.s or ()))
                           for p in files}, "-o")
    model = ModelOptions(release=args.release, device=args.device, threads=args.threads)
    check = check_levers(args.images, args.s, levers, model, thresholds, CheckOptions(reps=args.reps))
    print(format_report(check.report))
    print(write_report(check, args.o))


def _demo_parser() -> argparse.ArgumentParser:
    p = _StrictParser(prog="rootlets demo", description="Run the whole job offline on a phantom with the "
                                "bundled release: rootlets, spinal and vertebral levels, QC; prints where each output is.")
    p.add_argument("-o", default="demo_output", metavar="DIR", help="output folder (default: demo_output)")
    p.add_argument("-seed", type=int, default=7, help="phantom seed")
    p.add_argument("-orient", default="AIL", help="SCT orientation code of the phantom image")
    p.add_argument("-v", type=int, default=1, choices=[0, 1, 2], help="verbosity")
    return p


def _run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from rootlets_task.cli.demo import run_demo
    from rootlets_task.inference.backends import cache_dir
    from rootlets_task.models.install import models_dir

    outputs = run_demo(args.o, seed=args.seed, orient=args.orient, verbose=args.v)
    print("\nOutputs:")
    for name, path in outputs.items():
        print(f"  {name:10s} {_shown(path)}")
    print(f"\nThe demo model is in {_shown(models_dir())}, converted networks in {_shown(cache_dir())}; "
          "`rootlets clean` removes them.")


def _clean_parser() -> argparse.ArgumentParser:
    p = _StrictParser(prog="rootlets clean", description="Remove what rootlets_task stored for you outside "
                                "the repository: installed models (ROOTLETS_TASK_HOME or the user data folder) and "
                                "converted networks (ROOTLETS_TASK_CACHE or the user cache folder). Models installed "
                                "into SCT are left to SCT.")
    p.add_argument("-dry-run", action="store_true", help="only list what would be removed, with sizes")
    return p


def _run_clean(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    from rootlets_task.cli.clean import clean

    items = clean(dry_run=args.dry_run)
    for item in items:
        print(f"{'would remove' if args.dry_run else 'removed'} {item.what}: {_shown(item.path)} ({item.size / 1e6:.1f} MB)")
    if not items:
        print("nothing to remove: no model installed and no converted network cached")


def _shown(path) -> str:
    """A path as printed: normalised (no "..", no "./")."""
    return os.path.normpath(str(path))


class _Help(argparse.HelpFormatter):
    """``-h`` with each option's default (as SCT's help), unless its help already gives it or there is none worth
    showing (None, a flag's False); text with line breaks of its own (the SCT notes) printed as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or any(action.default is v for v in (None, False, argparse.SUPPRESS)) \
                or not action.option_strings:  # identity: a default of 0 is shown, a flag's False is not
            return text
        value = " ".join(map(str, action.default)) if isinstance(action.default, list | tuple) else action.default
        return f"{text} (default: {str(value).replace('%', '%%')})"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


# name -> (parser factory, handler). The segmentation parser is the default when no name is given.
COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable]] = {
    "demo": (_demo_parser, _run_demo),
    "phantom": (_phantom_parser, _run_phantom),
    "levels": (_levels_parser, _run_levels),
    "measure": (_measure_parser, _run_measure),
    "stats": (_stats_parser, _run_stats),
    "releases": (_releases_parser, _run_releases),
    "qc": (_qc_parser, _run_qc),
    "batch": (_batch_parser, _run_batch),
    "clean": (_clean_parser, _run_clean),
    "speedcheck": (_speedcheck_parser, _run_speedcheck),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rootlets`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in COMMANDS:
        make_parser, handler = COMMANDS[argv[0]]
        argv = argv[1:]
    else:
        make_parser, handler = _segment_parser, _run_segment
    parser = make_parser()
    parser.formatter_class = _Help
    args = parser.parse_args(argv)
    args.argv = argv  # as typed: recorded in sidecars and QC entries
    from rootlets_task.core import logs

    logs.configure(getattr(args, "v", 1))
    previous = _raise_on_sigterm()
    try:
        handler(args, parser)
    except RootletsError as exc:
        print(f"rootlets: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rootlets: interrupted; every output is either complete or absent (none is half-written)", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _raise_on_sigterm():
    """Make SIGTERM (``kill``, a scheduler's cancel) unwind like Ctrl-C, so temporary files are removed on the way."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (an embedding application): leave signals alone
        return None


if __name__ == "__main__":
    sys.exit(main())

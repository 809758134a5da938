"""The ``rootlets-bids`` command: rootlets_task as a BIDS App (https://bids-apps.neuroimaging.io), the container's
entry point. It parses the BIDS Apps command line and calls the batch library, nothing more:

* ``rootlets-bids BIDS_DIR OUTPUT_DIR participant``: :func:`rootlets_task.batch.run.run_batch` on the selected
  participants (``--participant_label``, ``--session_label``), as ``rootlets batch BIDS_DIR -o OUTPUT_DIR`` does;
* ``rootlets-bids BIDS_DIR OUTPUT_DIR group``: :func:`rootlets_task.batch.run.group_level`, the dataset tables and
  group statistics over the participants done (after one participant-level job per subject, say).

Exit codes: 0 done; 1 an image failed or the run could not start (one line says why); 2 a malformed command line.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from rootlets_task._version import __version__
from rootlets_task.core.errors import RootletsError

PROG = "rootlets-bids"
LABEL = re.compile(r"[A-Za-z0-9]+")
ENV_RELEASE = "ROOTLETS_BIDS_RELEASE"  # the default --release; the Containerfile sets it to the release it bakes in


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, allow_abbrev=False,
        description="Spinal nerve rootlets (RootletSeg nnU-Net) and, with --levels, spinal and vertebral levels of "
        "every anat image of a BIDS dataset, as a BIDS App. participant: segment the selected participants into the "
        "derivative dataset OUTPUT_DIR (resumable: images already done are skipped); group: the dataset tables and "
        "group statistics (levels.csv, shift.csv, group/) over the participants done with --levels. See "
        "docs/container.md.",
        epilog="Exit codes: 0 done; 1 an image failed or the run could not start (the message says why); 2 a malformed "
        "command line.")
    p.add_argument("bids_dir", metavar="BIDS_DIR", help="the BIDS dataset (read only)")
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="the derivative dataset to write, e.g. "
                   "BIDS_DIR/derivatives/rootlets")
    p.add_argument("analysis_level", metavar="ANALYSIS_LEVEL", choices=["participant", "group"], help="participant: "
                   "run the images; group: the tables and statistics over the participants done")
    p.add_argument("--participant_label", nargs="+", metavar="LABEL", help="only these participants (01 or sub-01; "
                   "default: all)")
    p.add_argument("--session_label", nargs="+", metavar="LABEL", help="only these sessions (01 or ses-01; default: all)")
    p.add_argument("--levels", action="store_true", help="also the spinal and vertebral levels of every image (needs "
                   "the cord and disc labels in the labels derivative, --labels, or SCT); always on at group level")
    p.add_argument("--labels", metavar="DIR", help="manual labels derivative (default BIDS_DIR/derivatives/labels)")
    p.add_argument("--contrast", nargs="+", default=["T2w"], metavar="SUFFIX", help="BIDS suffix(es) to process "
                   "(default T2w; e.g. T1w, UNIT1, MP2RAGE, inv-1)")
    p.add_argument("--release", metavar="TAG", default=os.environ.get(ENV_RELEASE) or None, help="model release "
                   f"(default: ${ENV_RELEASE}, which a container sets to the release built into it, else r20250318; "
                   "see `rootlets releases`)")
    p.add_argument("--qc", metavar="DIR", help="write a QC report of every image into this folder")
    p.add_argument("--bids_strict", action="store_true", help="BIDS-valid output names (see `rootlets batch -h`)")
    p.add_argument("--jobs", type=int, metavar="N", help="images run side by side in local worker processes "
                   "(default 1)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads per job (default: the cores divided among "
                   "the jobs)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more detail in the log (-v: each step)")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and the summary only")
    p.add_argument("--version", action="version", version=f"{PROG} (rootlets_task) {__version__}")
    return p


def _labels(parser: argparse.ArgumentParser, values: list[str] | None, prefix: str, flag: str) -> tuple[str, ...]:
    """``sub-01`` or ``01`` -> ``01``, as BIDS Apps accept both; anything else is a usage error."""
    labels = tuple(v.removeprefix(prefix) for v in values or ())
    bad = [v for v, label in zip(values or (), labels, strict=True) if not LABEL.fullmatch(label)]
    if bad:
        parser.error(f"{flag} {' '.join(bad)}: a label is letters and digits, with or without '{prefix}'")
    return labels


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rootlets-bids`` console script."""
    from rootlets_task.batch.run import BatchOptions, group_level, run_batch
    from rootlets_task.core import logs
    from rootlets_task.core.options import ChainOptions, ModelOptions

    p = parser()
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    verbosity = 0 if args.quiet else min(1 + args.verbose, 2)
    if (args.jobs is not None and args.jobs < 1) or (args.threads is not None and args.threads < 1):
        p.error("--jobs and --threads take a number from 1")
    options = BatchOptions(contrasts=tuple(args.contrast), labels=args.labels, jobs=args.jobs, qc=args.qc,
                           subjects=_labels(p, args.participant_label, "sub-", "--participant_label"),
                           sessions=_labels(p, args.session_label, "ses-", "--session_label"),
                           bids_strict=args.bids_strict, progress=verbosity > 0)
    model = ModelOptions(release=args.release, threads=args.threads)
    logs.configure(verbosity)
    try:
        if args.analysis_level == "group":
            for name, path in group_level(args.bids_dir, args.output_dir, options, model, ChainOptions()).items():
                print(f"{name:16s} {os.path.normpath(path)}")
            return 0
        summary = run_batch(args.bids_dir, args.output_dir, options, model, ChainOptions() if args.levels else None)
        print(summary.text())
        if summary.failed:
            raise RootletsError(f"{len(summary.failed)} of {len(summary.results)} image(s) not done; see the list above "
                                f"and {os.path.normpath(summary.out / 'logs')}/err.*.log")
    except RootletsError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; every output is either complete or absent (none is half-written)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/bin/bash
# How the CSVs in this folder were made: the lab's 02a_rootlets_to_spinal_levels.py and discs_to_vertebral_levels.py,
# unchanged, on a real SCT, with the lab's preprocessing of the discs (analysis_preprocess_pipeline.sh:
# sct_label_utils -project-centerline), on
#   - the phantom cases of tests/support/lab_cases.py (built with the project's Python: `python -m support.lab_cases`);
#   - SCT's t2 test files: cord t2_seg-manual, rootlets t2_seg-deepseg_rootlets-manual and t2_seg-deepseg_rootlets;
#     there is no PMJ label there, so t2_pmj-topcord.nii.gz (value 50) marks the cord's centre of mass on its top slice.
# Usage: bash run_lab_sct.sh WORK MODEL_SPINAL_ROOTLETS SCT_TESTING_DATA/t2 PROJECT_PYTHON SCT_ENV
#   SCT_ENV: a script that puts SCT on the PATH (e.g. /work/side/env.sh); PROJECT_PYTHON: a Python with rootlets_task.
# then:  PROJECT_PYTHON compare.py WORK   (writes WORK/comparison.csv and WORK/max_differences.csv)
set -euo pipefail
WORK=$(realpath -m "$1"); MSR=$(realpath "$2"); T2=$(realpath "$3"); PY=$4; SCT_ENV=$(realpath "$5")
HERE=$(dirname "$(realpath "$0")")
TESTS=$(realpath "$HERE/../../..")
mkdir -p "$WORK" && cd "$WORK"
rm -rf cases lab t2
PYTHONPATH="$TESTS:${PYTHONPATH:-}" "$PY" -m support.lab_cases cases
# shellcheck disable=SC1090
source "$SCT_ENV"
export MPLBACKEND=Agg
sct_version

P=phantom_T2w_label
for CASE in $(ls cases); do
  mkdir -p "lab/$CASE" && cp cases/"$CASE"/*.nii.gz "lab/$CASE/" && cd "lab/$CASE"
  sct_label_utils -i $P-SC_seg.nii.gz -project-centerline $P-discs_dlabel.nii.gz -o $P-discs_dlabel_centerline.nii.gz -v 0
  python "$MSR/inter-rater_variability/02a_rootlets_to_spinal_levels.py" -i $P-rootlets_dseg.nii.gz -s $P-SC_seg.nii.gz -pmj $P-PMJ_dlabel.nii.gz -dilate 3
  python "$MSR/utilities/hc-leipzig-7t-mp2rage/analysis_MP2RAGE_T2w/discs_to_vertebral_levels.py" -centerline $P-SC_seg_centerline_extrapolated.csv -disclabel $P-discs_dlabel_centerline.nii.gz
  cd "$WORK"
done

# t2 (no discs: the lab's discs script needs >= 9 disc labels; t2 has none)
mkdir -p lab/t2 && cp "$T2"/{t2_seg-manual,t2_seg-deepseg_rootlets-manual,t2_seg-deepseg_rootlets}.nii.gz "$HERE/t2/t2_pmj-topcord.nii.gz" lab/t2/
cd lab/t2
for R in t2_seg-deepseg_rootlets-manual t2_seg-deepseg_rootlets; do
  python "$MSR/inter-rater_variability/02a_rootlets_to_spinal_levels.py" -i $R.nii.gz -s t2_seg-manual.nii.gz -pmj t2_pmj-topcord.nii.gz -dilate 3
done

#!/bin/bash
# How the CSVs in this folder were made. Runs the lab's 02a_rootlets_to_spinal_levels.py and
# discs_to_vertebral_levels.py (unchanged, with a real SCT) and our `rootlets levels -method reference` on
#   - the tilted phantom:   rootlets phantom -o WORK/phantom -tilt 15   (seed 0)
#   - SCT's t2 test files:  cord t2_seg-manual, rootlets t2_seg-deepseg_rootlets-manual and t2_seg-deepseg_rootlets;
#     there is no PMJ label there, so t2_pmj-topcord.nii.gz (value 50) marks the cord's centre of mass on its top slice.
# Usage: source SCT_ENV; bash run_lab_sct.sh WORK MODEL_SPINAL_ROOTLETS SCT_TESTING_DATA/t2 ROOTLETS_CLI
# then:  python compare.py WORK   (writes WORK/comparison.csv)
set -euo pipefail
WORK=$(realpath "$1"); MSR=$(realpath "$2"); T2=$(realpath "$3"); ROOTLETS=$4
HERE=$(dirname "$(realpath "$0")")
export MPLBACKEND=Agg
mkdir -p "$WORK" && cd "$WORK"
sct_version

# phantom: the lab's pipeline steps (analysis_preprocess_pipeline.sh): discs projected on the cord, 02a, discs script
rm -rf phantom lab_phantom ours_phantom && "$ROOTLETS" phantom -o phantom -tilt 15
mkdir lab_phantom && cp phantom/phantom_T2w.nii.gz phantom/phantom_T2w_label-{rootlets_dseg,SC_seg,discs_dlabel,PMJ_dlabel}.nii.gz lab_phantom/
cd lab_phantom
sct_label_utils -i phantom_T2w_label-SC_seg.nii.gz -project-centerline phantom_T2w_label-discs_dlabel.nii.gz -o phantom_T2w_label-discs_dlabel_centerline.nii.gz -v 0
python "$MSR/inter-rater_variability/02a_rootlets_to_spinal_levels.py" -i phantom_T2w_label-rootlets_dseg.nii.gz -s phantom_T2w_label-SC_seg.nii.gz -pmj phantom_T2w_label-PMJ_dlabel.nii.gz -dilate 3
python "$MSR/utilities/hc-leipzig-7t-mp2rage/analysis_MP2RAGE_T2w/discs_to_vertebral_levels.py" -centerline phantom_T2w_label-SC_seg_centerline_extrapolated.csv -disclabel phantom_T2w_label-discs_dlabel_centerline.nii.gz
cd "$WORK"
P=phantom/phantom_T2w_label
"$ROOTLETS" levels -r $P-rootlets_dseg.nii.gz -s $P-SC_seg.nii.gz -discs $P-discs_dlabel.nii.gz -pmj $P-PMJ_dlabel.nii.gz -method reference -o ours_phantom

# t2 (no discs: the lab's discs script needs >= 9 disc labels; t2 has none)
rm -rf t2 lab_t2 ours_t2 && mkdir t2 && cp "$T2"/{t2,t2_seg-manual,t2_seg-deepseg_rootlets-manual,t2_seg-deepseg_rootlets}.nii.gz "$HERE/t2/t2_pmj-topcord.nii.gz" t2/
cp -r t2 lab_t2 && cd lab_t2
for R in t2_seg-deepseg_rootlets-manual t2_seg-deepseg_rootlets; do
  python "$MSR/inter-rater_variability/02a_rootlets_to_spinal_levels.py" -i $R.nii.gz -s t2_seg-manual.nii.gz -pmj t2_pmj-topcord.nii.gz -dilate 3
done
cd "$WORK"
for R in t2_seg-deepseg_rootlets-manual t2_seg-deepseg_rootlets; do
  "$ROOTLETS" levels -r t2/$R.nii.gz -s t2/t2_seg-manual.nii.gz -pmj t2/t2_pmj-topcord.nii.gz -method reference -o ours_t2
done
